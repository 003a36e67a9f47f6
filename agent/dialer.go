package agent

import (
	"context"
	"crypto/tls"
	"time"
)

// Dialer opens the agent's MQTT connection. The default, PahoDialer, speaks
// MQTT 3.1.1 over TCP or TLS with paho; tests and the simulator substitute
// their own to cut connections or to multiplex.
type Dialer interface {
	Dial(ctx context.Context, opts DialOptions) (Conn, error)
}

// DialOptions say how to connect. The session is persistent (clean session
// off) and never reconnects by itself: the agent runs its own reconnect loop.
type DialOptions struct {
	URL       string // tcp://, mqtt://, ssl://, tls:// or mqtts://host:port
	TLS       *tls.Config
	ClientID  string
	Username  string
	Password  string
	KeepAlive time.Duration
	Will      Message // registered as the last will; zero Topic = none

	// OnMessage receives every inbound message. It must not block.
	OnMessage func(topic string, payload []byte)
	// OnLost is called once if the connection dies, but not after Disconnect.
	OnLost func(err error)
}

// Message is one MQTT publication.
type Message struct {
	Topic    string
	Payload  []byte
	QoS      byte
	Retained bool
}

// Conn is an open MQTT connection.
type Conn interface {
	// Publish sends m and, for QoS 1, waits for the broker's PUBACK.
	Publish(ctx context.Context, m Message) error
	// Subscribe subscribes to each topic filter at its QoS.
	Subscribe(ctx context.Context, filters map[string]byte) error
	// Unsubscribe ends subscriptions to the topic filters.
	Unsubscribe(ctx context.Context, filters ...string) error
	// Disconnect closes the connection cleanly: the broker drops the will.
	Disconnect()
	IsConnected() bool
}
