module github.com/lowbit/lowbit/ffi-examples/go

go 1.19
