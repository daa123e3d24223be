module edgetwin.bench/modbusd

go 1.26

require github.com/simonvetter/modbus v1.6.4

require github.com/goburrow/serial v0.1.0 // indirect
