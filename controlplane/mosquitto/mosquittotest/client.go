package mosquittotest

import (
	"fmt"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// Dial connects an MQTT 3.1.1 client to the broker as user; configure, if
// not nil, adjusts the options first (a will, handlers, a client ID). The
// client does not reconnect by itself unless configure says so, and is
// disconnected when the test ends.
func (b *Broker) Dial(user, password string, configure func(*mqtt.ClientOptions)) (mqtt.Client, error) {
	opts := mqtt.NewClientOptions().
		AddBroker(b.URL()).
		SetClientID(user + "-" + randomSecret()[:8]).
		SetUsername(user).
		SetPassword(password).
		SetProtocolVersion(4).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second)
	if configure != nil {
		configure(opts)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, fmt.Errorf("connect %s: timed out", user)
	}
	if err := tok.Error(); err != nil {
		return nil, fmt.Errorf("connect %s: %w", user, err)
	}
	b.t.Cleanup(func() { c.Disconnect(100) })
	return c, nil
}

// MustDial is Dial that fails the test on error.
func (b *Broker) MustDial(user, password string, configure func(*mqtt.ClientOptions)) mqtt.Client {
	b.t.Helper()
	c, err := b.Dial(user, password, configure)
	if err != nil {
		b.t.Fatal(err)
	}
	return c
}
