package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"sync"

	dmiapi "github.com/kubeedge/api/apis/dmi/v1beta1"
	"github.com/kubeedge/mapper-framework/pkg/grpcserver"
	"github.com/kubeedge/mapper-framework/pkg/util/parse"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// recorder is the mapper's DeviceMapperService: mapper-framework's own server, with every
// call the edge makes written as a JSON line to the file named by DMIMAPPER_RECORD (so a
// test can check the exact sequence), and made strict: a device that comes with a
// ReadWrite property and no desired value is refused, since mapper-framework writes the
// desired value it is given when the device starts.
type recorder struct {
	*grpcserver.Server
	panel *panel
	mu    sync.Mutex
	out   *os.File
	grpc  *grpc.Server
	path  string
}

// call is one line of the record.
type call struct {
	Method  string                       `json:"method"`
	Device  string                       `json:"device,omitempty"`
	Model   string                       `json:"model,omitempty"`
	Desired map[string]string            `json:"desired,omitempty"`
	Devices map[string]map[string]string `json:"devices,omitempty"`
	Models  []string                     `json:"models,omitempty"`
	Result  string                       `json:"result"`
}

func newRecorder(path string, p *panel, protocol string) (*recorder, error) {
	r := &recorder{panel: p, path: path}
	server := grpcserver.NewServer(grpcserver.Config{SockPath: path, Protocol: protocol}, p)
	r.Server = &server
	if file := os.Getenv("DMIMAPPER_RECORD"); file != "" {
		out, err := os.OpenFile(file, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, err
		}
		r.out = out
	}
	return r, nil
}

func (r *recorder) write(c call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.out == nil {
		return
	}
	line, _ := json.Marshal(c)
	_, _ = r.out.Write(append(line, '\n'))
}

func result(err error) string {
	if err != nil {
		return "refused: " + err.Error()
	}
	return "ok"
}

func desiredOf(d *dmiapi.Device) map[string]string {
	out := map[string]string{}
	for _, prop := range d.GetSpec().GetProperties() {
		out[prop.GetName()] = prop.GetDesired().GetValue()
	}
	return out
}

// missingDesired names a ReadWrite property of the device given without a desired value.
func (r *recorder) missingDesired(d *dmiapi.Device) error {
	model, err := r.panel.GetModel(parse.GetResourceID(d.GetNamespace(), d.GetSpec().GetDeviceModelReference()))
	if err != nil {
		return nil // mapper-framework says so itself
	}
	writable := map[string]bool{}
	for _, prop := range model.Properties {
		writable[prop.Name] = prop.AccessMode == "ReadWrite"
	}
	for _, prop := range d.GetSpec().GetProperties() {
		if writable[prop.GetName()] && prop.GetDesired().GetValue() == "" {
			return status.Errorf(codes.InvalidArgument, "device %s/%s: property %s has no desired value", d.GetNamespace(), d.GetName(), prop.GetName())
		}
	}
	return nil
}

func (r *recorder) deviceCall(method string, d *dmiapi.Device, serve func() error) error {
	err := r.missingDesired(d)
	if err == nil {
		err = serve()
	}
	r.write(call{Method: method, Device: d.GetNamespace() + "/" + d.GetName(), Desired: desiredOf(d), Result: result(err)})
	return err
}

func (r *recorder) RegisterDevice(ctx context.Context, req *dmiapi.RegisterDeviceRequest) (*dmiapi.RegisterDeviceResponse, error) {
	var resp *dmiapi.RegisterDeviceResponse
	err := r.deviceCall("RegisterDevice", req.GetDevice(), func() (err error) {
		resp, err = r.Server.RegisterDevice(ctx, req)
		return err
	})
	return resp, err
}

func (r *recorder) UpdateDevice(ctx context.Context, req *dmiapi.UpdateDeviceRequest) (*dmiapi.UpdateDeviceResponse, error) {
	var resp *dmiapi.UpdateDeviceResponse
	err := r.deviceCall("UpdateDevice", req.GetDevice(), func() (err error) {
		resp, err = r.Server.UpdateDevice(ctx, req)
		return err
	})
	return resp, err
}

func (r *recorder) RemoveDevice(ctx context.Context, req *dmiapi.RemoveDeviceRequest) (*dmiapi.RemoveDeviceResponse, error) {
	resp, err := r.Server.RemoveDevice(ctx, req)
	r.write(call{Method: "RemoveDevice", Device: req.GetDeviceNamespace() + "/" + req.GetDeviceName(), Result: result(err)})
	return resp, err
}

func (r *recorder) CreateDeviceModel(ctx context.Context, req *dmiapi.CreateDeviceModelRequest) (*dmiapi.CreateDeviceModelResponse, error) {
	resp, err := r.Server.CreateDeviceModel(ctx, req)
	r.write(call{Method: "CreateDeviceModel", Model: req.GetModel().GetNamespace() + "/" + req.GetModel().GetName(), Result: result(err)})
	return resp, err
}

func (r *recorder) UpdateDeviceModel(ctx context.Context, req *dmiapi.UpdateDeviceModelRequest) (*dmiapi.UpdateDeviceModelResponse, error) {
	resp, err := r.Server.UpdateDeviceModel(ctx, req)
	r.write(call{Method: "UpdateDeviceModel", Model: req.GetModel().GetNamespace() + "/" + req.GetModel().GetName(), Result: result(err)})
	return resp, err
}

func (r *recorder) RemoveDeviceModel(ctx context.Context, req *dmiapi.RemoveDeviceModelRequest) (*dmiapi.RemoveDeviceModelResponse, error) {
	resp, err := r.Server.RemoveDeviceModel(ctx, req)
	r.write(call{Method: "RemoveDeviceModel", Model: req.GetModelNamespace() + "/" + req.GetModelName(), Result: result(err)})
	return resp, err
}

// registered records what the edge's answer to MapperRegister held, and keeps only the
// devices the strict mapper accepts.
func (r *recorder) registered(devices []*dmiapi.Device, models []*dmiapi.DeviceModel) []*dmiapi.Device {
	for _, m := range models {
		model := parse.GetDeviceModelFromGrpc(m)
		r.panel.UpdateModel(&model)
	}
	c := call{Method: "MapperRegister", Devices: map[string]map[string]string{}, Result: "ok"}
	for _, m := range models {
		c.Models = append(c.Models, m.GetNamespace()+"/"+m.GetName())
	}
	var kept []*dmiapi.Device
	for _, d := range devices {
		c.Devices[d.GetNamespace()+"/"+d.GetName()] = desiredOf(d)
		if err := r.missingDesired(d); err != nil {
			c.Result = fmt.Sprintf("refused: %v", err)
			continue
		}
		kept = append(kept, d)
	}
	r.write(c)
	return kept
}

// Start serves the socket until Stop.
func (r *recorder) Start() error {
	_ = os.Remove(r.path)
	listener, err := net.Listen("unix", r.path)
	if err != nil {
		return err
	}
	r.grpc = grpc.NewServer()
	dmiapi.RegisterDeviceMapperServiceServer(r.grpc, r)
	return r.grpc.Serve(listener)
}

func (r *recorder) Stop() {
	if r.grpc != nil {
		r.grpc.Stop()
	}
	_ = os.Remove(r.path)
}
