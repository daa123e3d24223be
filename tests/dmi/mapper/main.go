// Command dmimapper is a KubeEdge mapper for Modbus TCP devices, built on KubeEdge's own
// mapper runtime library (github.com/kubeedge/mapper-framework) as KubeEdge's mappers are:
// it registers with the edge over the Device Management Interface, serves the edge's
// device and model calls on its own socket, and reports twins and states back.
// Only the driver (driver.go) and the device bookkeeping (panel.go) are ours.
package main

import (
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	dmiapi "github.com/kubeedge/api/apis/dmi/v1beta1"
	"github.com/kubeedge/mapper-framework/pkg/config"
	"github.com/kubeedge/mapper-framework/pkg/grpcclient"
	"k8s.io/klog/v2"
)

func main() {
	cfg, err := config.Parse()
	if err != nil {
		klog.Fatalf("config: %v", err)
	}
	panel := newPanel()
	server, err := newRecorder(cfg.GrpcServer.SocketPath, panel, cfg.Common.Protocol)
	if err != nil {
		klog.Fatalf("record: %v", err)
	}
	devices, models := register()
	if err := panel.DevInit(server.registered(devices, models), models); err != nil {
		klog.Fatalf("devices from the edge: %v", err)
	}
	panel.DevStart()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	var stopping atomic.Bool
	go func() {
		<-signals
		stopping.Store(true)
		panel.stopAll()
		server.Stop() // Start returns once its listener is closed
	}()
	klog.Infof("mapper %s serving protocol %s on %s", cfg.Common.Name, cfg.Common.Protocol, cfg.GrpcServer.SocketPath)
	if err := server.Start(); err != nil && !stopping.Load() {
		klog.Fatalf("grpc server: %v", err)
	}
}

// register asks the edge for this mapper's devices, waiting for the edge to come up.
func register() ([]*dmiapi.Device, []*dmiapi.DeviceModel) {
	for {
		devices, models, err := grpcclient.RegisterMapper(true)
		if err == nil {
			klog.Infof("registered: %d device(s), %d model(s)", len(devices), len(models))
			return devices, models
		}
		klog.Warningf("register with the edge: %v", err)
		time.Sleep(200 * time.Millisecond)
	}
}
