package mosquitto

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/flotilla-edge/flotilla/proto/topic"
)

// The dynamic-security plugin's command and response topics.
const (
	ControlTopic  = "$CONTROL/dynamic-security/v1"
	ResponseTopic = ControlTopic + "/response"
)

// ErrNoResponse reports a command mosquitto did not answer before the
// context ended: the plugin is not loaded, the admin user lacks its role, or
// the broker is down.
var ErrNoResponse = errors.New("no response from the dynamic-security plugin")

// CommandError is mosquitto's refusal of one dynamic-security command, with
// the plugin's own text ("Client not found", "Role already exists", …).
type CommandError struct {
	Command string
	Message string
}

func (e *CommandError) Error() string {
	return "dynsec " + e.Command + ": " + e.Message
}

// command is one entry of a request's "commands" array. Fields are the
// plugin's; the zero value of each is left out.
type command map[string]any

// response is one entry of the plugin's "responses" array.
type response struct {
	Command         string          `json:"command"`
	Error           string          `json:"error"`
	Data            json.RawMessage `json:"data"`
	CorrelationData string          `json:"correlationData"`
}

// err returns the response as an error, nil when the command succeeded.
func (r response) err() error {
	if r.Error == "" {
		return nil
	}
	return &CommandError{Command: r.Command, Message: r.Error}
}

// call is one request in flight: its responses arrive in order of commands.
type call struct {
	got  []response
	left int
	done chan struct{}
}

// Dynsec administers Mosquitto's dynamic-security plugin over an MQTT
// connection that is logged in as the plugin's admin user: it enrols and
// revokes devices at run time. It is safe for concurrent use.
//
// Requests and responses share fixed topics (MQTT 3.1.1 has no response
// topic), so every command carries a correlation ID made of a random prefix
// for this Dynsec and a sequence number; responses to other admins are
// ignored.
type Dynsec struct {
	c      mqtt.Client
	scheme topic.Scheme
	admin  string // the admin's own username: never touched as a device
	prefix string
	seq    atomic.Uint64

	mu      sync.Mutex
	pending map[string]*call
	stale   bool // a request timed out: subscribe again before the next
}

// NewDynsec returns an administrator over c, which must be connected as the
// dynamic-security admin user, and subscribes to the plugin's responses.
//
// If c reconnects with a clean session the subscription is gone: create c
// with CleanSession(false) and a fixed client ID, or call Resubscribe from
// its OnConnect handler. A request that times out also makes the next one
// subscribe again.
func NewDynsec(ctx context.Context, c mqtt.Client, scheme topic.Scheme) (*Dynsec, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	opts := c.OptionsReader()
	d := &Dynsec{
		c:       c,
		scheme:  scheme,
		admin:   opts.Username(),
		prefix:  "flotilla-" + hex.EncodeToString(b[:]),
		pending: map[string]*call{},
	}
	if err := d.Resubscribe(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

// Resubscribe subscribes to the plugin's response topic again, as needed
// after a reconnect with a clean session.
func (d *Dynsec) Resubscribe(ctx context.Context) error {
	tok := d.c.Subscribe(ResponseTopic, 1, d.onResponse)
	if err := wait(ctx, tok); err != nil {
		return fmt.Errorf("subscribe to %s: %w", ResponseTopic, err)
	}
	if st, ok := tok.(*mqtt.SubscribeToken); ok && st.Result()[ResponseTopic] == 0x80 {
		return fmt.Errorf("subscribe to %s: refused by the broker (is this the dynsec admin user?)", ResponseTopic)
	}
	return nil
}

// Close stops listening for responses; requests in flight then time out.
// It does not disconnect the client, which the caller owns.
func (d *Dynsec) Close() error {
	tok := d.c.Unsubscribe(ResponseTopic)
	if !tok.WaitTimeout(5 * time.Second) {
		return fmt.Errorf("unsubscribe from %s: timed out", ResponseTopic)
	}
	return tok.Error()
}

// onResponse routes the plugin's answers to the calls waiting for them.
func (d *Dynsec) onResponse(_ mqtt.Client, m mqtt.Message) {
	var body struct {
		Responses []response `json:"responses"`
	}
	if err := json.Unmarshal(m.Payload(), &body); err != nil {
		return // not ours to judge: another admin's tool may share the topic
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range body.Responses {
		id, idx, ok := d.parseCorrelation(r.CorrelationData)
		if !ok {
			continue
		}
		c := d.pending[id]
		if c == nil || idx >= len(c.got) || c.got[idx].Command != "" {
			continue
		}
		c.got[idx] = r
		if c.left--; c.left == 0 {
			close(c.done)
		}
	}
}

// parseCorrelation splits "prefix.seq.index" into the request ID and the
// command's index; ok is false for another admin's correlation data.
func (d *Dynsec) parseCorrelation(s string) (id string, idx int, ok bool) {
	if !strings.HasPrefix(s, d.prefix+".") {
		return "", 0, false
	}
	i := strings.LastIndexByte(s, '.')
	n, err := strconv.Atoi(s[i+1:])
	if err != nil || n < 0 {
		return "", 0, false
	}
	return s[:i], n, true
}

// do sends cmds in one message and returns their responses in order. A
// command the plugin refused is reported in its response, not as err; err
// is for the request as a whole (not sent, no answer in time).
func (d *Dynsec) do(ctx context.Context, cmds ...command) ([]response, error) {
	d.mu.Lock()
	stale := d.stale
	d.stale = false
	d.mu.Unlock()
	if stale {
		if err := d.Resubscribe(ctx); err != nil {
			d.markStale()
			return nil, err
		}
	}

	id := d.prefix + "." + strconv.FormatUint(d.seq.Add(1), 10)
	for i, c := range cmds {
		c["correlationData"] = id + "." + strconv.Itoa(i)
	}
	payload, err := json.Marshal(map[string]any{"commands": cmds})
	if err != nil {
		return nil, fmt.Errorf("encode dynsec request: %w", err)
	}
	c := &call{got: make([]response, len(cmds)), left: len(cmds), done: make(chan struct{})}
	d.mu.Lock()
	d.pending[id] = c
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.pending, id)
		d.mu.Unlock()
	}()

	if err := wait(ctx, d.c.Publish(ControlTopic, 1, false, payload)); err != nil {
		return nil, fmt.Errorf("send dynsec %s: %w", cmds[0]["command"], err)
	}
	select {
	case <-c.done:
		return c.got, nil
	case <-ctx.Done():
		d.markStale()
		return nil, fmt.Errorf("dynsec %s: %w: %w", cmds[0]["command"], ErrNoResponse, ctx.Err())
	}
}

func (d *Dynsec) markStale() {
	d.mu.Lock()
	d.stale = true
	d.mu.Unlock()
}

// wait waits for an MQTT token or the end of ctx.
func wait(ctx context.Context, tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Exec runs one dynamic-security command (name plus its fields, as the
// plugin documents them) and returns its "data", for what this type has no
// method for: listClients, getDefaultACLAccess, disableClient. A refusal is
// a *CommandError.
func (d *Dynsec) Exec(ctx context.Context, name string, fields map[string]any) (json.RawMessage, error) {
	c := command{}
	for k, v := range fields {
		c[k] = v
	}
	c["command"] = name
	rs, err := d.do(ctx, c)
	if err != nil {
		return nil, err
	}
	return rs[0].Data, rs[0].err()
}
