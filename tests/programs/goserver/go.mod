module periscope.test/goserver

go 1.21
