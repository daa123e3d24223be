package main

// A minimal MQTT 3.1.1 client: CONNECT, SUBSCRIBE, PUBLISH at QoS 0/1 and the
// acknowledgements. The generator needs little of MQTT and a lot of speed:
// paho.mqtt.golang spent 34 µs of CPU per message here, more than mosquitto
// itself (21 µs), so it limited what it was meant to measure. One goroutine
// writes, flushing only when nothing else is queued, so a burst costs few
// system calls.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

const (
	typeConnect   = 1
	typeConnack   = 2
	typePublish   = 3
	typePuback    = 4
	typeSubscribe = 8
	typeSuback    = 9
)

type client struct {
	conn    net.Conn
	out     chan []byte
	suback  chan struct{}
	nextID  uint16
	deliver func(topic string, payload []byte)
	failed  chan error
}

func appendString(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	return append(b, s...)
}

func appendLength(b []byte, n int) []byte {
	for {
		digit := byte(n % 128)
		n /= 128
		if n > 0 {
			digit |= 0x80
		}
		b = append(b, digit)
		if n == 0 {
			return b
		}
	}
}

func packet(header byte, body []byte) []byte {
	out := make([]byte, 0, len(body)+5)
	out = append(out, header)
	out = appendLength(out, len(body))
	return append(out, body...)
}

// dial connects with a clean session and no keepalive (a run is short).
func dial(addr, id, username, password string, deliver func(string, []byte)) (*client, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	flags := byte(0x02) // clean session
	body := appendString(nil, "MQTT")
	if username != "" {
		flags |= 0xC0
	}
	body = append(body, 4, flags, 0, 0)
	body = appendString(body, id)
	if username != "" {
		body = appendString(appendString(body, username), password)
	}
	if _, err := conn.Write(packet(typeConnect<<4, body)); err != nil {
		return nil, err
	}
	reader := bufio.NewReaderSize(conn, 1<<16)
	kind, ack, err := readPacket(reader)
	if err != nil {
		return nil, fmt.Errorf("CONNACK: %w", err)
	}
	if kind>>4 != typeConnack || len(ack) != 2 || ack[1] != 0 {
		return nil, fmt.Errorf("connection refused: %v", ack)
	}
	c := &client{
		conn:    conn,
		out:     make(chan []byte, 4096),
		suback:  make(chan struct{}, 1),
		deliver: deliver,
		failed:  make(chan error, 2),
	}
	go c.write()
	go c.read(reader)
	return c, nil
}

func readPacket(r *bufio.Reader) (byte, []byte, error) {
	header, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	length, shift := 0, 0
	for {
		digit, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		length |= int(digit&0x7F) << shift
		if digit&0x80 == 0 {
			break
		}
		shift += 7
	}
	body := make([]byte, length)
	_, err = io.ReadFull(r, body)
	return header, body, err
}

func (c *client) write() {
	w := bufio.NewWriterSize(c.conn, 1<<16)
	for p := range c.out {
		if _, err := w.Write(p); err != nil {
			c.failed <- err
			return
		}
		if len(c.out) == 0 {
			if err := w.Flush(); err != nil {
				c.failed <- err
				return
			}
		}
	}
}

func (c *client) read(r *bufio.Reader) {
	for {
		header, body, err := readPacket(r)
		if err != nil {
			c.failed <- err
			return
		}
		switch header >> 4 {
		case typePublish:
			if len(body) < 2 {
				c.failed <- errors.New("short PUBLISH")
				return
			}
			n := int(binary.BigEndian.Uint16(body))
			topic := string(body[2 : 2+n])
			rest := body[2+n:]
			if qos := (header >> 1) & 3; qos > 0 {
				c.out <- packet(typePuback<<4, rest[:2])
				rest = rest[2:]
			}
			c.deliver(topic, rest)
		case typeSuback:
			c.suback <- struct{}{}
		}
	}
}

func (c *client) id() []byte {
	c.nextID++
	if c.nextID == 0 {
		c.nextID = 1
	}
	return binary.BigEndian.AppendUint16(nil, c.nextID)
}

func (c *client) subscribe(filter string, qos byte) error {
	body := append(appendString(c.id(), filter), qos)
	c.out <- packet(typeSubscribe<<4|0x02, body)
	select {
	case <-c.suback:
		return nil
	case err := <-c.failed:
		return err
	case <-time.After(10 * time.Second):
		return errors.New("no SUBACK")
	}
}

// publish queues a QoS 1 publication; its PUBACK is read and dropped (the answer counts).
func (c *client) publish(topic string, payload []byte) {
	body := appendString(make([]byte, 0, len(topic)+len(payload)+4), topic)
	body = append(append(body, c.id()...), payload...)
	c.out <- packet(typePublish<<4|0x02, body)
}

func (c *client) close() {
	close(c.out)
	_ = c.conn.Close()
}
