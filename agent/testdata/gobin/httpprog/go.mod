module example.com/periscope/gobinhttp

go 1.19
