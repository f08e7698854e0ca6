module periscope.test/goproxy

go 1.21
