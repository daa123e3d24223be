package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	dmiapi "github.com/kubeedge/api/apis/dmi/v1beta1"
	"github.com/kubeedge/mapper-framework/pkg/common"
	"github.com/kubeedge/mapper-framework/pkg/grpcclient"
	"github.com/simonvetter/modbus"
	"k8s.io/klog/v2"
)

// protocolConfig is a device's protocol configData: a Modbus TCP server.
type protocolConfig struct {
	IP      string `json:"ip"`
	Port    int    `json:"port"`
	SlaveID int    `json:"slaveID"`
}

// visitor is a property's visitor configData: where its value lives.
type visitor struct {
	Register string  `json:"register"`
	Offset   uint16  `json:"offset"`
	Scale    float64 `json:"scale"`
}

// device is one Modbus device, served by its own goroutine: it writes the desired values
// the edge sent, reads every property each collect cycle, and reports what changed.
type device struct {
	mu       sync.Mutex
	model    common.DeviceModel
	instance common.DeviceInstance
	readings map[string]string

	poke chan struct{}
	quit chan struct{}
	done chan struct{}

	// owned by the goroutine
	client   *modbus.ModbusClient
	written  map[string]string
	reported map[string]string
	state    string
}

func newDevice(model common.DeviceModel, instance common.DeviceInstance) *device {
	return &device{
		model:    model,
		instance: instance,
		readings: map[string]string{},
		poke:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		written:  map[string]string{},
		reported: map[string]string{},
	}
}

func (d *device) snapshot() common.DeviceInstance {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.instance
}

func (d *device) modelSnapshot() common.DeviceModel {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.model
}

func (d *device) sameConnection(instance *common.DeviceInstance) bool {
	return bytes.Equal(d.snapshot().PProtocol.ConfigData, instance.PProtocol.ConfigData)
}

// update takes a new spec (new desired values, most often) and wakes the goroutine.
func (d *device) update(model common.DeviceModel, instance common.DeviceInstance) {
	d.mu.Lock()
	d.model, d.instance = model, instance
	d.mu.Unlock()
	d.wake()
}

func (d *device) wake() {
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

func (d *device) write(property, value string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range d.instance.Twins {
		if d.instance.Twins[i].PropertyName == property {
			d.instance.Twins[i].ObservedDesired.Value = value
			go d.wake()
			return nil
		}
	}
	return fmt.Errorf("device %s has no property %s", d.instance.ID, property)
}

func (d *device) reading(property string) (string, string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	value, ok := d.readings[property]
	if !ok {
		return "", "", fmt.Errorf("no reading of %s yet", property)
	}
	for _, prop := range d.instance.Properties {
		if prop.PropertyName == property {
			return value, prop.PProperty.DataType, nil
		}
	}
	return value, "", nil
}

// stop ends the goroutine; one stuck in a report to an edge that is gone (mapper-framework
// dials it with no deadline) is left behind, as the process is ending.
func (d *device) stop() {
	close(d.quit)
	select {
	case <-d.done:
	case <-time.After(2 * time.Second):
	}
}

func (d *device) run() {
	defer close(d.done)
	ticker := time.NewTicker(d.cycle())
	defer ticker.Stop()
	d.round()
	for {
		select {
		case <-d.quit:
			if d.client != nil {
				_ = d.client.Close()
			}
			return
		case <-d.poke:
			d.round()
		case <-ticker.C:
			d.round()
		}
	}
}

// round writes the desired values not yet written, then reads and reports.
func (d *device) round() {
	instance := d.snapshot()
	if err := d.connect(instance); err != nil {
		d.setState(instance, common.DeviceStatusDisCONN, err)
		return
	}
	for _, twin := range instance.Twins {
		want := twin.ObservedDesired.Value
		if want == "" || d.written[twin.PropertyName] == want || twin.Property == nil {
			continue
		}
		if twin.Property.PProperty.AccessMode != "ReadWrite" {
			continue
		}
		if err := d.writeValue(*twin.Property, want); err != nil {
			klog.Warningf("device %s: write %s=%s: %v", instance.ID, twin.PropertyName, want, err)
			continue
		}
		d.written[twin.PropertyName] = want
		klog.V(2).Infof("device %s: wrote %s=%s", instance.ID, twin.PropertyName, want)
	}
	d.poll(instance)
}

func (d *device) connect(instance common.DeviceInstance) error {
	if d.client != nil {
		return nil
	}
	var wrapped struct {
		ConfigData protocolConfig `json:"configData"`
	}
	if err := json.Unmarshal(instance.PProtocol.ConfigData, &wrapped); err != nil {
		return fmt.Errorf("protocol configData: %w", err)
	}
	cfg := wrapped.ConfigData
	client, err := modbus.NewClient(&modbus.ClientConfiguration{
		URL:     fmt.Sprintf("tcp://%s:%d", cfg.IP, cfg.Port),
		Timeout: time.Second,
	})
	if err != nil {
		return err
	}
	if err := client.Open(); err != nil {
		return err
	}
	if cfg.SlaveID != 0 {
		_ = client.SetUnitId(uint8(cfg.SlaveID))
	}
	d.client = client
	return nil
}

func (d *device) poll(instance common.DeviceInstance) {
	var twins []*dmiapi.Twin
	readings := map[string]string{}
	for _, prop := range instance.Properties {
		value, err := d.readValue(prop)
		if err != nil {
			_ = d.client.Close()
			d.client = nil
			d.setState(instance, common.DeviceStatusDisCONN, err)
			return
		}
		readings[prop.PropertyName] = value
		if d.reported[prop.PropertyName] == value {
			continue
		}
		twins = append(twins, &dmiapi.Twin{
			PropertyName: prop.PropertyName,
			Reported: &dmiapi.TwinProperty{
				Value: value,
				Metadata: map[string]string{
					"type":      strings.ToLower(prop.PProperty.DataType),
					"timestamp": strconv.FormatInt(time.Now().UnixMilli(), 10),
				},
			},
			ObservedDesired: &dmiapi.TwinProperty{Value: d.written[prop.PropertyName]},
		})
	}
	d.mu.Lock()
	d.readings = readings
	d.mu.Unlock()
	d.setState(instance, common.DeviceStatusOnline, nil)
	if len(twins) == 0 {
		return
	}
	err := grpcclient.ReportDeviceStatus(&dmiapi.ReportDeviceStatusRequest{
		DeviceName:      instance.Name,
		DeviceNamespace: instance.Namespace,
		ReportedDevice:  &dmiapi.DeviceStatus{Twins: twins, ReportToCloud: true},
	})
	if err != nil {
		klog.Warningf("device %s: report: %v", instance.ID, err)
		return // reported again next round
	}
	for _, twin := range twins {
		d.reported[twin.PropertyName] = twin.Reported.Value
	}
}

func (d *device) setState(instance common.DeviceInstance, state string, cause error) {
	if d.state == state {
		return
	}
	if cause != nil {
		klog.Warningf("device %s is %s: %v", instance.ID, state, cause)
	}
	err := grpcclient.ReportDeviceStates(&dmiapi.ReportDeviceStatesRequest{
		DeviceName:      instance.Name,
		DeviceNamespace: instance.Namespace,
		State:           state,
	})
	if err != nil {
		klog.Warningf("device %s: report state: %v", instance.ID, err)
		return // told again next round
	}
	d.state = state
}

func visitorOf(prop common.DeviceProperty) (visitor, error) {
	var wrapped struct {
		ConfigData visitor `json:"configData"`
	}
	if err := json.Unmarshal(prop.Visitors, &wrapped); err != nil {
		return visitor{}, fmt.Errorf("property %s visitors: %w", prop.PropertyName, err)
	}
	if wrapped.ConfigData.Scale == 0 {
		wrapped.ConfigData.Scale = 1
	}
	return wrapped.ConfigData, nil
}

func (d *device) readValue(prop common.DeviceProperty) (string, error) {
	v, err := visitorOf(prop)
	if err != nil {
		return "", err
	}
	switch v.Register {
	case "CoilRegister", "DiscreteInputRegister":
		read := d.client.ReadCoils
		if v.Register == "DiscreteInputRegister" {
			read = d.client.ReadDiscreteInputs
		}
		bits, err := read(v.Offset, 1)
		if err != nil {
			return "", err
		}
		return strconv.FormatBool(bits[0]), nil
	case "HoldingRegister", "InputRegister":
		kind := modbus.HOLDING_REGISTER
		if v.Register == "InputRegister" {
			kind = modbus.INPUT_REGISTER
		}
		word, err := d.client.ReadRegister(v.Offset, kind)
		if err != nil {
			return "", err
		}
		return formatScaled(float64(int16(word))*v.Scale, v.Scale), nil
	}
	return "", fmt.Errorf("property %s: unknown register %q", prop.PropertyName, v.Register)
}

func (d *device) writeValue(prop common.DeviceProperty, value string) error {
	v, err := visitorOf(prop)
	if err != nil {
		return err
	}
	switch v.Register {
	case "CoilRegister":
		on, err := strconv.ParseBool(value)
		if err != nil {
			return err
		}
		return d.client.WriteCoil(v.Offset, on)
	case "HoldingRegister":
		number, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return err
		}
		raw := math.Round(number / v.Scale)
		if raw < math.MinInt16 || raw > math.MaxInt16 {
			return fmt.Errorf("%s does not fit a register", value)
		}
		return d.client.WriteRegister(v.Offset, uint16(int16(raw)))
	}
	return fmt.Errorf("property %s: register %q is not writable", prop.PropertyName, v.Register)
}

// formatScaled prints a scaled register with the decimals its scale has (0.1 -> one).
func formatScaled(value, scale float64) string {
	decimals := 0
	if scale < 1 {
		decimals = int(math.Ceil(-math.Log10(scale) - 1e-9))
	}
	return strconv.FormatFloat(value, 'f', decimals, 64)
}

// cycle is how often the device is read: its shortest collectCycle, 1 s by default.
func (d *device) cycle() time.Duration {
	shortest := int64(0)
	for _, prop := range d.snapshot().Properties {
		if prop.CollectCycle > 0 && (shortest == 0 || prop.CollectCycle < shortest) {
			shortest = prop.CollectCycle
		}
	}
	if shortest == 0 {
		shortest = 1000
	}
	return time.Duration(shortest) * time.Millisecond
}
