package fetch

import (
	"context"
	"errors"
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Paho adapts a connected paho client to Conn, each subscription with its
// own handler. timeout bounds each operation (0 means 30 s). The agent's
// session has its own connection type; this one serves the simulator,
// tests and benchmarks.
func Paho(c mqtt.Client, timeout time.Duration) Conn {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return pahoConn{c: c, timeout: timeout}
}

type pahoConn struct {
	c       mqtt.Client
	timeout time.Duration
}

func (p pahoConn) Subscribe(ctx context.Context, topic string, qos byte, deliver func([]byte)) error {
	tok := p.c.Subscribe(topic, qos, func(_ mqtt.Client, m mqtt.Message) { deliver(m.Payload()) })
	if err := p.wait(ctx, tok); err != nil {
		return err
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok {
		for f, code := range st.Result() {
			if code == 0x80 {
				return fmt.Errorf("mqtt: subscription to %s refused", f)
			}
		}
	}
	return nil
}

func (p pahoConn) Unsubscribe(ctx context.Context, topic string) error {
	return p.wait(ctx, p.c.Unsubscribe(topic))
}

func (p pahoConn) Publish(ctx context.Context, topic string, qos byte, payload []byte) error {
	if !p.c.IsConnectionOpen() {
		return errors.New("mqtt: not connected")
	}
	return p.wait(ctx, p.c.Publish(topic, qos, false, payload))
}

func (p pahoConn) wait(ctx context.Context, tok mqtt.Token) error {
	t := time.NewTimer(p.timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("mqtt: timed out")
	}
}
