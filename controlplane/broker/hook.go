package broker

import (
	"context"
	"errors"
	"fmt"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Reasons a CONNECT is refused after the Authenticator accepted it.
var (
	errClientID     = errors.New("a device must connect with its device id as client id")
	errWill         = errors.New("will topic not permitted")
	errSessionOwner = errors.New("client id holds another principal's session")
	errRaced        = errors.New("principal disconnected while authenticating")
)

// hook is the mochi hook that authenticates and authorizes every client.
// It is the only hook that provides OnConnectAuthenticate and OnACLCheck,
// and mochi refuses everything when no hook allows it, so there is no
// anonymous access.
type hook struct {
	mqtt.HookBase
	e *Embedded
}

func (h *hook) ID() string { return "flotilla-auth" }

func (h *hook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *hook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	c, ok := cl.Net.Conn.(*conn)
	if !ok {
		return false // not one of our connections (mochi's inline client is off)
	}
	defer c.authenticated()
	p, err := h.e.authenticate(c, cl, pk)
	if err != nil {
		h.e.stats.refusedConnects.Add(1)
		h.e.log.Info("mqtt connect refused", "client_id", pk.Connect.ClientIdentifier,
			"username", string(pk.Connect.Username), "remote", cl.Net.Remote, "err", err)
		return false
	}
	h.e.stats.connects.Add(1)
	h.e.log.Debug("mqtt connected", "kind", p.Kind, "id", p.ID, "client_id", cl.ID, "remote", cl.Net.Remote)
	return true
}

// OnACLCheck authorizes a PUBLISH (write) or one SUBSCRIBE filter.
func (h *hook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	var p Principal
	c, ok := cl.Net.Conn.(*conn)
	if ok {
		p, ok = c.Principal()
	}
	if write {
		if ok && h.e.canPublish(p, topic) {
			return true
		}
		h.e.stats.refusedPublishes.Add(1)
		return false
	}
	if ok && h.e.canSubscribe(p, topic) {
		return true
	}
	h.e.stats.refusedSubscribes.Add(1)
	return false
}

// authenticate asks the Authenticator about a CONNECT, applies the
// broker's own rules, and binds the principal to the connection. If a
// Disconnect runs meanwhile it asks again, so a revoked principal that
// authenticated a moment before its revocation does not slip through.
func (e *Embedded) authenticate(c *conn, cl *mqtt.Client, pk packets.Packet) (Principal, error) {
	ctx, cancel := context.WithTimeout(e.ctx, e.cfg.ConnectTimeout)
	defer cancel()
	cert := c.peerCert()
	for range 3 {
		gen := e.live.generation()
		p, err := e.cfg.Auth.Authenticate(ctx, pk.Connect.ClientIdentifier, string(pk.Connect.Username), pk.Connect.Password, cert)
		if err != nil {
			return Principal{}, err
		}
		if err := e.admit(p, cl, pk); err != nil {
			return Principal{}, err
		}
		if e.live.bind(c, p, cl, gen) {
			return p, nil
		}
	}
	return Principal{}, errRaced
}

// admit applies the broker's rules to an authenticated CONNECT.
func (e *Embedded) admit(p Principal, cl *mqtt.Client, pk packets.Packet) error {
	if p.ID == "" || (p.Kind != Device && p.Kind != Service) {
		return fmt.Errorf("authenticator returned an invalid principal %v %q", p.Kind, p.ID)
	}
	if p.Kind == Device && pk.Connect.ClientIdentifier != p.ID {
		return errClientID
	}
	// mochi publishes a will without any ACL check, so check it now.
	if pk.Connect.WillFlag && !e.canPublish(p, pk.Connect.WillTopic) {
		e.stats.refusedWills.Add(1)
		return fmt.Errorf("%w: %q", errWill, pk.Connect.WillTopic)
	}
	// mochi hands an existing session (subscriptions included) to any
	// client with the same ID; only its own principal may have it.
	if old, ok := e.server.Clients.Get(cl.ID); ok {
		oc, ok := old.Net.Conn.(*conn)
		if !ok {
			return errSessionOwner
		}
		if op, ok := oc.Principal(); !ok || op != p {
			return errSessionOwner
		}
	}
	return nil
}

// canPublish checks a PUBLISH or will topic: a concrete topic, never a
// $-topic, then the Authorizer.
func (e *Embedded) canPublish(p Principal, topic string) bool {
	if topic == "" || topic[0] == '$' || strings.ContainsAny(topic, "+#\x00") {
		return false
	}
	return e.cfg.ACL.CanPublish(p, topic)
}

// canSubscribe checks a SUBSCRIBE filter. A shared subscription is
// authorized on the filter inside it; devices never read $-topics.
func (e *Embedded) canSubscribe(p Principal, filter string) bool {
	const share = "$share/"
	if len(filter) > len(share) && strings.EqualFold(filter[:len(share)], share) {
		group, inner, ok := strings.Cut(filter[len(share):], "/")
		if !ok || group == "" || inner == "" {
			return false
		}
		filter = inner
	}
	if filter == "" || strings.IndexByte(filter, 0) >= 0 {
		return false
	}
	if filter[0] == '$' && p.Kind != Service {
		return false
	}
	return e.cfg.ACL.CanSubscribe(p, filter)
}
