// Command modbusd is the Modbus side of the mapper benchmark: Modbus TCP
// gateways, each serving every unit id, whose holding and input registers
// change every 100 ms, so a mapper polling them has new values to report.
// It serves on each -listen address until its standard input closes.
//
// With -selftest it measures itself instead: as many Go clients as there are
// listeners read -registers registers from units in turn for -seconds, and
// it prints one JSON line (requests per second and its own CPU per request),
// the ceiling the mapper's rate is compared with.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/simonvetter/modbus"
)

// registers serves reads and takes writes; a register's value is its unit,
// its address and the current 100 ms tick, so every poll sees a change.
type registers struct {
	served atomic.Int64
}

func (r *registers) value(unit uint8, addr uint16) uint16 {
	tick := time.Now().UnixMilli() / 100
	return uint16(int64(unit)*8 + int64(addr) + tick)
}

func (r *registers) read(unit uint8, addr, quantity uint16) []uint16 {
	r.served.Add(1)
	out := make([]uint16, quantity)
	for i := range out {
		out[i] = r.value(unit, addr+uint16(i))
	}
	return out
}

func (r *registers) HandleCoils(req *modbus.CoilsRequest) ([]bool, error) {
	r.served.Add(1)
	return make([]bool, req.Quantity), nil
}

func (r *registers) HandleDiscreteInputs(req *modbus.DiscreteInputsRequest) ([]bool, error) {
	r.served.Add(1)
	return make([]bool, req.Quantity), nil
}

func (r *registers) HandleHoldingRegisters(req *modbus.HoldingRegistersRequest) ([]uint16, error) {
	if req.IsWrite {
		r.served.Add(1)
		return nil, nil
	}
	return r.read(req.UnitId, req.Addr, req.Quantity), nil
}

func (r *registers) HandleInputRegisters(req *modbus.InputRegistersRequest) ([]uint16, error) {
	return r.read(req.UnitId, req.Addr, req.Quantity), nil
}

func serve(addresses []string, handler *registers) []*modbus.ModbusServer {
	quiet := log.New(io.Discard, "", 0)
	var servers []*modbus.ModbusServer
	for _, address := range addresses {
		server, err := modbus.NewServer(&modbus.ServerConfiguration{
			URL:        "tcp://" + address,
			Timeout:    time.Hour,
			MaxClients: 64,
			Logger:     quiet,
		}, handler)
		if err == nil {
			err = server.Start()
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "modbusd: %s: %v\n", address, err)
			os.Exit(1)
		}
		servers = append(servers, server)
	}
	return servers
}

func cpuSeconds() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return 0
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}

// selftest floods the gateways with one client each and reports the rate.
func selftest(addresses []string, handler *registers, seconds float64, count uint16) {
	deadline := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	startCPU, started := cpuSeconds(), time.Now()
	var wg sync.WaitGroup
	var failures atomic.Int64
	for _, address := range addresses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client, err := modbus.NewClient(&modbus.ClientConfiguration{
				URL: "tcp://" + address, Timeout: 2 * time.Second, Logger: log.New(io.Discard, "", 0),
			})
			if err == nil {
				err = client.Open()
			}
			if err != nil {
				failures.Add(1)
				return
			}
			defer client.Close()
			for unit := uint8(1); time.Now().Before(deadline); unit = unit%100 + 1 {
				_ = client.SetUnitId(unit)
				if _, err := client.ReadRegisters(0, count, modbus.HOLDING_REGISTER); err != nil {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(started).Seconds()
	requests := float64(handler.served.Load())
	result := map[string]float64{
		"requests_per_s": requests / elapsed,
		// The clients run in this process too: an upper bound of the server's cost.
		"cpu_us_per_request": (cpuSeconds() - startCPU) / requests * 1e6,
		"failures":           float64(failures.Load()),
	}
	_ = json.NewEncoder(os.Stdout).Encode(result)
}

func main() {
	listen := flag.String("listen", "127.0.0.1:5020", "comma-separated host:port to serve on")
	test := flag.Bool("selftest", false, "measure the servers with Go clients and exit")
	seconds := flag.Float64("seconds", 3, "how long the self-test runs")
	count := flag.Uint("registers", 8, "registers per read in the self-test")
	flag.Parse()
	addresses := strings.Split(*listen, ",")
	handler := &registers{}
	servers := serve(addresses, handler)
	if *test {
		selftest(addresses, handler, *seconds, uint16(*count))
	} else {
		fmt.Println("ready")
		_, _ = io.Copy(io.Discard, os.Stdin)
	}
	for _, server := range servers {
		_ = server.Stop()
	}
}
