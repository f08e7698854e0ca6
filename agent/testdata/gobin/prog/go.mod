module example.com/periscope/gobintest

go 1.19
