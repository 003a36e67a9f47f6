package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

type mqttOptions struct {
	User, Password string
	CAPEM          []byte
	ClientID       string
	Logger         *slog.Logger
}

// MQTT is the control plane's own connection to the broker. It
// re-subscribes after every reconnect.
//
// Its session is clean: the broker ends it with the connection. A
// persistent one would outlive its replica (every process connects under a
// new client ID, so nothing ever resumes it), and Mosquitto goes on dealing
// a gone member of a shared subscription its share of the stream, queued
// in the orphaned session until the broker expires it: after a replica
// stopped or crashed, half the devices' telemetry (with two replicas)
// waited an ack timeout to be sent again, and half their heartbeats,
// command results, chunk requests and progress reports went nowhere. What
// a clean session misses while the connection is down is dealt to another
// replica or sent again by the device (TestReplicaSummariesMosquitto).
type MQTT struct {
	opts   mqttOptions
	client paho.Client
	log    *slog.Logger

	mu        sync.Mutex
	filters   []string
	handler   func(ctx context.Context, topic string, payload []byte)
	reconnect []func()
	connected bool
}

// afterReconnect runs f after every reconnect (not the first connect).
func (m *MQTT) afterReconnect(f func()) {
	m.mu.Lock()
	m.reconnect = append(m.reconnect, f)
	m.mu.Unlock()
}

func newMQTT(o mqttOptions) *MQTT {
	return &MQTT{opts: o, log: o.Logger}
}

// Connect dials url (ssl://, mqtts://, tcp://) and waits for the session.
func (m *MQTT) Connect(ctx context.Context, url string) error {
	o := paho.NewClientOptions().
		AddBroker(url).
		SetClientID(m.opts.ClientID).
		SetUsername(m.opts.User).
		SetPassword(m.opts.Password).
		SetCleanSession(true).
		SetOrderMatters(true).
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(30 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetConnectTimeout(10 * time.Second).
		SetDefaultPublishHandler(m.onMessage).
		SetOnConnectHandler(m.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			m.log.Warn("broker connection lost", "err", err)
		})
	if len(m.opts.CAPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(m.opts.CAPEM) {
			return errors.New("mqtt: no certificate in CA PEM")
		}
		o.SetTLSConfig(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	m.client = paho.NewClient(o)
	tok := m.client.Connect()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			return fmt.Errorf("mqtt connect %s: %w", url, err)
		}
	case <-ctx.Done():
		m.client.Disconnect(0)
		return fmt.Errorf("mqtt connect %s: %w", url, ctx.Err())
	}
	// With ConnectRetry the token completes only once connected.
	return nil
}

// Client is the underlying paho client (for the external broker's admin
// API).
func (m *MQTT) Client() paho.Client { return m.client }

// Subscribe subscribes to filters now and after every reconnect, passing
// every message to handler in arrival order.
func (m *MQTT) Subscribe(filters []string, handler func(ctx context.Context, topic string, payload []byte)) error {
	m.mu.Lock()
	m.filters = append(m.filters, filters...)
	m.handler = handler
	m.mu.Unlock()
	return m.subscribe(filters)
}

func (m *MQTT) subscribe(filters []string) error {
	if len(filters) == 0 {
		return nil
	}
	subs := map[string]byte{}
	for _, f := range filters {
		subs[f] = 1
	}
	tok := m.client.SubscribeMultiple(subs, nil)
	if !tok.WaitTimeout(30 * time.Second) {
		return errors.New("mqtt subscribe: timed out")
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("mqtt subscribe: %w", err)
	}
	if st, ok := tok.(*paho.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("mqtt subscribe %s: refused by the broker", f)
			}
		}
	}
	return nil
}

func (m *MQTT) onConnect(paho.Client) {
	m.mu.Lock()
	filters := append([]string(nil), m.filters...)
	again := m.connected
	m.connected = true
	hooks := append([]func(){}, m.reconnect...)
	m.mu.Unlock()
	if again {
		for _, f := range hooks {
			go f()
		}
	}
	m.log.Info("connected to broker")
	if err := m.subscribe(filters); err != nil {
		m.log.Error("resubscribe failed", "err", err)
	}
}

func (m *MQTT) onMessage(_ paho.Client, msg paho.Message) {
	m.mu.Lock()
	h := m.handler
	m.mu.Unlock()
	if h != nil {
		h(context.Background(), msg.Topic(), msg.Payload())
	}
}

// Publish sends one message and waits for the broker's acknowledgement (QoS
// 1) or the write (QoS 0).
func (m *MQTT) Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error {
	if m.client == nil {
		return errors.New("mqtt: not connected")
	}
	tok := m.client.Publish(topic, qos, retained, payload)
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close disconnects, giving in-flight messages a moment to finish.
func (m *MQTT) Close() {
	if m.client != nil {
		m.client.Disconnect(250)
	}
}
