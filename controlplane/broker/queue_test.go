package broker

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func TestQueueLimitDefaults(t *testing.T) {
	e := start(t, nil)
	if e.b.cfg.MaxQueued != DefaultMaxQueued || e.b.cfg.MaxInflight != DefaultMaxInflight {
		t.Fatalf("defaults: queued %d inflight %d", e.b.cfg.MaxQueued, e.b.cfg.MaxInflight)
	}
	if _, err := New(Config{Addr: "127.0.0.1:0", Auth: newFakeAuth(), ACL: &fakeACL{}, MaxInflight: 1 << 20}); err == nil {
		t.Fatal("MaxInflight over 65535 accepted")
	}
}

// TestStalledSubscriberIsDroppedNotQueued: a device that subscribes and
// then stops reading gets at most MaxQueued packets queued for it; the rest
// are dropped and counted, and other subscribers still get everything.
func TestStalledSubscriberIsDroppedNotQueued(t *testing.T) {
	e := start(t, func(c *Config) { c.MaxQueued = 16 })
	addr := strings.TrimPrefix(e.url, "tcp://")
	nc, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetReadBuffer(4 << 10)
	}
	// CONNECT (MQTT 3.1.1, clean session, user and password) and SUBSCRIBE,
	// then never read again.
	mustWrite(t, nc, packet(0x10, mqttString("MQTT"), []byte{4, 0xC2, 0, 60},
		mqttString("dev-a"), mqttString("dev-a"), mqttString("secret-a")))
	ack := make([]byte, 4)
	_ = nc.SetReadDeadline(time.Now().Add(wait))
	if _, err := nc.Read(ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		t.Fatalf("CONNACK %x: %v", ack, err)
	}
	topic := "dev/dev-a/bulk"
	mustWrite(t, nc, packet(0x82, []byte{0, 1}, mqttString(topic), []byte{0}))
	if _, err := nc.Read(ack[:3]); err != nil || ack[0] != 0x90 {
		t.Fatalf("SUBACK %x: %v", ack, err)
	}

	const n = 400 // 25 MiB: far more than the socket buffers hold
	reader := make(chan struct{}, n)
	rc := e.mustDial(t, "reader", "control", "service-secret")
	if tok := rc.Subscribe(topic, 0, func(paho.Client, paho.Message) { reader <- struct{}{} }); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("subscribe: %v", tok.Error())
	}
	svc := e.service(t)
	payload := strings.Repeat("x", 64<<10)
	// One message at a time, each waited for by the reading subscriber:
	// its queue never holds more than one, so every drop is the stalled
	// subscriber's.
	for i := range n {
		publish(t, svc, topic, 0, false, payload)
		select {
		case <-reader:
		case <-time.After(wait):
			t.Fatalf("reading subscriber got %d of %d", i, n)
		}
	}
	// The kernel's socket buffers take a few MiB before the queue fills.
	if d := e.b.Stats().Dropped; d < n/2 {
		t.Fatalf("dropped %d of %d for a subscriber that does not read", d, n)
	} else {
		t.Logf("dropped %d of %d for the stalled subscriber", d, n)
	}
}

func packet(kind byte, parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	out := []byte{kind}
	n := len(body)
	for {
		b := byte(n % 128)
		n /= 128
		if n > 0 {
			b |= 0x80
		}
		out = append(out, b)
		if n == 0 {
			break
		}
	}
	return append(out, body...)
}

func mqttString(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func mustWrite(t *testing.T, c net.Conn, b []byte) {
	t.Helper()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
}
