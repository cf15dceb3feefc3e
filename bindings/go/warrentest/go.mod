module warren/bindings/go/warrentest

go 1.19
