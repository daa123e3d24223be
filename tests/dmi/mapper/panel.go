package main

import (
	"fmt"
	"sync"

	dmiapi "github.com/kubeedge/api/apis/dmi/v1beta1"
	"github.com/kubeedge/mapper-framework/pkg/common"
	"github.com/kubeedge/mapper-framework/pkg/util/parse"
	"k8s.io/klog/v2"
)

// panel keeps the mapper's devices and models: mapper-framework's global.DevPanel.
type panel struct {
	mu      sync.Mutex
	models  map[string]common.DeviceModel
	devices map[string]*device
}

// deviceView is what GetDevice returns: mapper-framework's GetDevice reads the twins from
// a struct field named Instance by reflection.
type deviceView struct {
	Instance common.DeviceInstance
}

func newPanel() *panel {
	return &panel{models: map[string]common.DeviceModel{}, devices: map[string]*device{}}
}

func (p *panel) DevInit(devices []*dmiapi.Device, models []*dmiapi.DeviceModel) error {
	for _, m := range models {
		model := parse.GetDeviceModelFromGrpc(m)
		p.UpdateModel(&model)
	}
	for _, d := range devices {
		model, err := p.GetModel(parse.GetResourceID(d.GetNamespace(), d.GetSpec().GetDeviceModelReference()))
		if err != nil {
			return err
		}
		instance, err := parse.GetDeviceFromGrpc(d, &model)
		if err != nil {
			return err
		}
		instance.PProtocol, err = parse.BuildProtocolFromGrpc(d)
		if err != nil {
			return err
		}
		p.UpdateDev(&model, instance)
	}
	return nil
}

// DevStart has nothing left to do: each device starts when it arrives.
func (p *panel) DevStart() {}

func (p *panel) UpdateDev(model *common.DeviceModel, instance *common.DeviceInstance) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.devices[instance.ID]; ok {
		if old.sameConnection(instance) {
			old.update(*model, *instance)
			return
		}
		old.stop()
	}
	d := newDevice(*model, *instance)
	p.devices[instance.ID] = d
	go d.run()
}

func (p *panel) UpdateDevTwins(deviceID string, twins []common.Twin) error {
	p.mu.Lock()
	d, ok := p.devices[deviceID]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("device %s not found", deviceID)
	}
	instance := d.snapshot()
	instance.Twins = twins
	d.update(d.modelSnapshot(), instance)
	return nil
}

func (p *panel) DealDeviceTwinGet(deviceID string, twinName string) (interface{}, error) {
	value, _, err := p.GetTwinResult(deviceID, twinName)
	return value, err
}

func (p *panel) GetDevice(deviceID string) (interface{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.devices[deviceID]
	if !ok {
		return nil, fmt.Errorf("device %s not found", deviceID)
	}
	return deviceView{Instance: d.snapshot()}, nil
}

func (p *panel) RemoveDevice(deviceID string) error {
	p.mu.Lock()
	d, ok := p.devices[deviceID]
	delete(p.devices, deviceID)
	p.mu.Unlock()
	if ok {
		d.stop()
		klog.Infof("device %s removed", deviceID)
	}
	return nil
}

func (p *panel) WriteDevice(_ string, deviceID, propertyName, data string) error {
	p.mu.Lock()
	d, ok := p.devices[deviceID]
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("device %s not found", deviceID)
	}
	return d.write(propertyName, data)
}

func (p *panel) GetModel(modelID string) (common.DeviceModel, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	model, ok := p.models[modelID]
	if !ok {
		return common.DeviceModel{}, fmt.Errorf("model %s not found", modelID)
	}
	return model, nil
}

func (p *panel) UpdateModel(model *common.DeviceModel) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.models[model.ID] = *model
}

func (p *panel) RemoveModel(modelID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.models, modelID)
}

func (p *panel) GetTwinResult(deviceID string, twinName string) (string, string, error) {
	p.mu.Lock()
	d, ok := p.devices[deviceID]
	p.mu.Unlock()
	if !ok {
		return "", "", fmt.Errorf("device %s not found", deviceID)
	}
	return d.reading(twinName)
}

func (p *panel) GetDeviceMethod(deviceID string) (map[string][]string, map[string]string, error) {
	p.mu.Lock()
	d, ok := p.devices[deviceID]
	p.mu.Unlock()
	if !ok {
		return nil, nil, fmt.Errorf("device %s not found", deviceID)
	}
	methods := map[string][]string{}
	types := map[string]string{}
	instance := d.snapshot()
	for _, m := range instance.Methods {
		methods[m.Name] = m.PropertyNames
	}
	for _, prop := range instance.Properties {
		types[prop.PropertyName] = prop.PProperty.DataType
	}
	return methods, types, nil
}

func (p *panel) stopAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, d := range p.devices {
		d.stop()
	}
}
