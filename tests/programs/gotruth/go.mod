module periscope.test/gotruth

go 1.21
