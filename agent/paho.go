package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// PahoDialer is the default Dialer: paho over TCP or TLS, auto-reconnect
// and connect-retry off (the agent reconnects with jittered backoff itself).
type PahoDialer struct {
	// NetDial opens the network connection; nil uses a net.Dialer. Tests
	// use it to keep hold of the connection and cut it.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Timeout bounds the connect and each publish; 0 means 30 s.
	Timeout time.Duration
}

var _ Dialer = PahoDialer{}

// Dial connects to the broker at opts.URL.
func (d PahoDialer) Dial(ctx context.Context, o DialOptions) (Conn, error) {
	u, err := url.Parse(o.URL)
	if err != nil {
		return nil, fmt.Errorf("mqtt url: %w", err)
	}
	var useTLS bool
	port := "1883"
	switch u.Scheme {
	case "tcp", "mqtt":
	case "ssl", "tls", "mqtts":
		useTLS, port = true, "8883"
	default:
		return nil, fmt.Errorf("mqtt url %q: scheme must be mqtts, ssl, tls, mqtt or tcp", o.URL)
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	netDial := d.NetDial
	if netDial == nil {
		netDial = (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext
	}
	tlsConf := o.TLS
	if useTLS {
		if tlsConf == nil {
			tlsConf = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tlsConf = tlsConf.Clone()
		if tlsConf.ServerName == "" {
			tlsConf.ServerName = u.Hostname()
		}
	}

	opts := mqtt.NewClientOptions().
		AddBroker("tcp://" + addr). // the connection itself is opened below
		SetClientID(o.ClientID).
		SetUsername(o.Username).
		SetPassword(o.Password).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetKeepAlive(o.KeepAlive).
		SetPingTimeout(10 * time.Second).
		SetConnectTimeout(timeout).
		SetWriteTimeout(timeout).
		SetOrderMatters(true).
		SetCustomOpenConnectionFn(func(*url.URL, mqtt.ClientOptions) (net.Conn, error) {
			nc, err := netDial(ctx, "tcp", addr)
			if err != nil || !useTLS {
				return nc, err
			}
			tc := tls.Client(nc, tlsConf)
			hctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			if err := tc.HandshakeContext(hctx); err != nil {
				nc.Close()
				return nil, err
			}
			return tc, nil
		})
	if o.Will.Topic != "" {
		opts.SetBinaryWill(o.Will.Topic, o.Will.Payload, o.Will.QoS, o.Will.Retained)
	}
	if o.OnMessage != nil {
		opts.SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) {
			o.OnMessage(m.Topic(), m.Payload())
		})
	}
	// With a persistent session paho keeps a QoS 1 publish in flight across
	// a lost connection instead of failing its token, so waits also end
	// when the connection is lost.
	pc := &pahoConn{timeout: timeout, lost: make(chan struct{})}
	opts.SetConnectionLostHandler(func(_ mqtt.Client, err error) {
		pc.once.Do(func() { close(pc.lost) })
		if o.OnLost != nil {
			o.OnLost(err)
		}
	})
	pc.c = mqtt.NewClient(opts)
	if err := wait(ctx, pc.c.Connect(), timeout, nil); err != nil {
		pc.c.Disconnect(0)
		return nil, fmt.Errorf("mqtt connect %s: %w", addr, err)
	}
	return pc, nil
}

type pahoConn struct {
	c       mqtt.Client
	timeout time.Duration
	once    sync.Once
	lost    chan struct{} // closed when the connection is lost
}

func (p *pahoConn) Publish(ctx context.Context, m Message) error {
	return wait(ctx, p.c.Publish(m.Topic, m.QoS, m.Retained, m.Payload), p.timeout, p.lost)
}

func (p *pahoConn) Subscribe(ctx context.Context, filters map[string]byte) error {
	tok := p.c.SubscribeMultiple(filters, nil)
	if err := wait(ctx, tok, p.timeout, p.lost); err != nil {
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

func (p *pahoConn) Unsubscribe(ctx context.Context, filters ...string) error {
	return wait(ctx, p.c.Unsubscribe(filters...), p.timeout, p.lost)
}

func (p *pahoConn) Disconnect()       { p.c.Disconnect(250) }
func (p *pahoConn) IsConnected() bool { return p.c.IsConnectionOpen() }

// errLost is returned by a wait cut short by the loss of the connection.
var errLost = errors.New("mqtt: connection lost")

// wait waits for a paho token, the context, the timeout or lost (nil: never).
func wait(ctx context.Context, tok mqtt.Token, timeout time.Duration, lost <-chan struct{}) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-lost:
		return errLost
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errors.New("mqtt: timed out")
	}
}
