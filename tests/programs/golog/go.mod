module golog

go 1.21
