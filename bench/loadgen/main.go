// Command loadgen drives an MQTT broker, or a node's twin through it, with QoS 1
// publications and counts the answers: a load generator that is not the limit of
// what it measures (check: its raw rate against the broker alone).
//
// Modes:
//
//	raw:  publish to bench/raw/<n>, a subscriber of bench/raw/# is the answer;
//	twin: publish a reported FLOAT to $hw/events/device/default/d<n>/twin/update,
//	      the twin's twin/update/result (matched by event_id) is the answer.
//
// At most -window publications are unanswered at a time. With -rate the
// publications are paced (open loop, latency measured from the planned send
// time, so a stalled answer path shows). With -flood none is awaited: the
// publications go out at -rate whatever comes back, as from a device that
// floods. It prints one JSON object.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"time"
)

type options struct {
	broker   string
	mode     string
	messages int
	warmup   int
	window   int
	devices  int
	rate     float64
	clients  int
	username string
	password string
	prefix   string
	flood    bool
}

type report struct {
	Mode     string  `json:"mode"`
	Sent     int     `json:"sent"`
	Answered int64   `json:"answered"`
	Refused  int64   `json:"refused"`
	Seconds  float64 `json:"seconds"`
	Rate     float64 `json:"rate"`
	P50ms    float64 `json:"p50_ms"`
	P99ms    float64 `json:"p99_ms"`
	MaxMs    float64 `json:"max_ms"`
}

// run is one measured pass: sends, the time each was (planned to be) sent, the answers.
type run struct {
	opts     options
	sentAt   []int64 // unix nanoseconds, by sequence number
	took     []int64 // nanoseconds from send to answer, by sequence number
	seen     []atomic.Bool
	answered atomic.Int64
	refused  atomic.Int64
	slots    chan struct{}
	done     chan struct{}
	base     int // sequence numbers of this pass start here
}

var eventID = []byte(`"event_id":"`)

// sequence finds the event_id's number without decoding the whole answer.
func sequence(payload []byte) (int, bool) {
	at := bytes.Index(payload, eventID)
	if at < 0 {
		return 0, false
	}
	rest := payload[at+len(eventID):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(rest[:end]))
	return n, err == nil
}

func (r *run) answer(payload []byte) {
	n, ok := sequence(payload)
	i := n - r.base
	if !ok || i < 0 || i >= len(r.sentAt) || r.seen[i].Swap(true) {
		return // not ours, or a duplicate
	}
	r.took[i] = time.Now().UnixNano() - atomic.LoadInt64(&r.sentAt[i])
	if bytes.Contains(payload, []byte(`"reason"`)) {
		r.refused.Add(1)
	}
	<-r.slots
	if r.answered.Add(1) == int64(len(r.sentAt)) {
		close(r.done)
	}
}

func (r *run) message(n int) (string, []byte) {
	value := float64(n%800) / 10 // inside the thermostat model's range for "current"
	body := fmt.Sprintf(`{"event_id":"%d","twin":{"current":{"actual":{"value":"%.1f"}}}}`, n, value)
	if r.opts.mode == "raw" {
		return fmt.Sprintf("bench/raw/%d", n%10), []byte(body)
	}
	return fmt.Sprintf("$hw/events/device/default/%s%d/twin/update", r.opts.prefix, n%r.opts.devices), []byte(body)
}

// pass publishes count messages numbered from base and waits for every answer.
func pass(o options, pubs []*client, current *atomic.Pointer[run], base, count int, rate float64) (*run, time.Duration, error) {
	r := &run{
		opts:   o,
		sentAt: make([]int64, count),
		took:   make([]int64, count),
		seen:   make([]atomic.Bool, count),
		slots:  make(chan struct{}, o.window),
		done:   make(chan struct{}),
		base:   base,
	}
	current.Store(r)
	started := time.Now()
	for i := range count {
		planned := started
		if rate > 0 {
			planned = started.Add(time.Duration(float64(i) / rate * float64(time.Second)))
			if wait := time.Until(planned); wait > 0 {
				time.Sleep(wait)
			}
		}
		if !o.flood {
			r.slots <- struct{}{}
		}
		stamp := time.Now()
		if rate > 0 {
			stamp = planned
		}
		atomic.StoreInt64(&r.sentAt[i], stamp.UnixNano())
		topic, body := r.message(base + i)
		pubs[i%len(pubs)].publish(topic, body)
	}
	if o.flood {
		return r, time.Since(started), nil
	}
	select {
	case <-r.done:
	case <-time.After(60 * time.Second):
		return nil, 0, fmt.Errorf("%d of %d answered after 60 s", r.answered.Load(), count)
	}
	return r, time.Since(started), nil
}

func percentile(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p * float64(len(sorted)-1))
	return float64(sorted[i]) / 1e6
}

func main() {
	var o options
	flag.StringVar(&o.broker, "broker", "127.0.0.1:1883", "host:port")
	flag.StringVar(&o.mode, "mode", "twin", "raw or twin")
	flag.IntVar(&o.messages, "messages", 20000, "measured publications")
	flag.IntVar(&o.warmup, "warmup", 2000, "publications before measuring")
	flag.IntVar(&o.window, "window", 200, "at most this many unanswered")
	flag.IntVar(&o.devices, "devices", 1000, "twin mode: devices default/<prefix>0..N-1, in turn")
	flag.StringVar(&o.prefix, "prefix", "d", "twin mode: the device names' prefix")
	flag.Float64Var(&o.rate, "rate", 0, "publications per second (0: as fast as answered)")
	flag.IntVar(&o.clients, "clients", 2, "publishing connections")
	flag.StringVar(&o.username, "username", "", "")
	flag.StringVar(&o.password, "password", "", "")
	flag.BoolVar(&o.flood, "flood", false, "await no answers: publish at -rate regardless")
	flag.Parse()
	if err := main1(o); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

func main1(o options) error {
	var current atomic.Pointer[run]
	sub, err := dial(o.broker, fmt.Sprintf("loadgen-sub-%d", os.Getpid()), o.username, o.password,
		func(_ string, payload []byte) {
			if r := current.Load(); r != nil {
				r.answer(payload)
			}
		})
	if err != nil {
		return err
	}
	defer sub.close()
	filter := "$hw/events/device/+/+/twin/update/result"
	if o.mode == "raw" {
		filter = "bench/raw/#"
	}
	if err := sub.subscribe(filter, 1); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	pubs := make([]*client, o.clients)
	for i := range pubs {
		id := fmt.Sprintf("loadgen-pub-%d-%d", os.Getpid(), i)
		if pubs[i], err = dial(o.broker, id, o.username, o.password, func(string, []byte) {}); err != nil {
			return err
		}
		defer pubs[i].close()
	}
	if o.warmup > 0 {
		if _, _, err := pass(o, pubs, &current, 0, o.warmup, 0); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	r, took, err := pass(o, pubs, &current, o.warmup, o.messages, o.rate)
	if err != nil {
		return err
	}
	latencies := slices.Clone(r.took)
	slices.Sort(latencies)
	out := report{
		Mode:     o.mode,
		Sent:     o.messages,
		Answered: r.answered.Load(),
		Refused:  r.refused.Load(),
		Seconds:  took.Seconds(),
		Rate:     float64(o.messages) / took.Seconds(),
		P50ms:    percentile(latencies, 0.50),
		P99ms:    percentile(latencies, 0.99),
		MaxMs:    percentile(latencies, 1.0),
	}
	return json.NewEncoder(os.Stdout).Encode(out)
}
