module edgetwin.test/dmimapper

go 1.26

require (
	github.com/kubeedge/api v1.21.0
	github.com/kubeedge/mapper-framework v1.21.0
	github.com/simonvetter/modbus v1.6.4
	google.golang.org/grpc v1.63.0
	k8s.io/klog/v2 v2.120.1
)

require (
	github.com/avast/retry-go v3.0.0+incompatible // indirect
	github.com/go-logr/logr v1.4.2 // indirect
	github.com/goburrow/serial v0.1.0 // indirect
	github.com/golang/protobuf v1.5.4 // indirect
	github.com/kr/text v0.2.0 // indirect
	github.com/spf13/pflag v1.0.6-0.20210604193023-d5e0c0615ace // indirect
	golang.org/x/net v0.25.0 // indirect
	golang.org/x/sys v0.28.0 // indirect
	golang.org/x/text v0.21.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20240401170217-c3f982113cda // indirect
	google.golang.org/protobuf v1.35.2 // indirect
	gopkg.in/yaml.v2 v2.4.0 // indirect
)
