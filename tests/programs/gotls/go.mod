module periscope.test/gotls

go 1.21
