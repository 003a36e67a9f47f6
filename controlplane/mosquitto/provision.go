package mosquitto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/flotilla-edge/flotilla/proto/topic"
)

// Names and markers of what Flotilla creates in the plugin. The text name
// marks a client as Flotilla's, so Provision and Revoke never take over or
// delete a client somebody else made (the admin, a monitoring user).
const (
	DeviceRolePrefix = "flotilla-device-"
	ControlRole      = "flotilla-control"
	deviceMarker     = "flotilla device"
	controlMarker    = "flotilla control plane"
)

// ErrNotOurs reports a username that belongs to a client Flotilla did not
// create for that purpose: Provision and Revoke leave it alone.
var ErrNotOurs = errors.New("client exists and was not created by flotilla for this purpose")

// Mosquitto's own error texts that Provision and Revoke expect.
const (
	errClientExists   = "Client already exists"
	errRoleExists     = "Role already exists"
	errClientNotFound = "Client not found"
	errRoleNotFound   = "Role not found"
)

// Baseline is the default ACL access EnsureBaseline sets: anything no role
// allows is denied, except unsubscribing.
var Baseline = map[string]bool{
	"publishClientSend":    false,
	"publishClientReceive": false,
	"subscribe":            false,
	"unsubscribe":          true,
}

// EnsureBaseline sets the plugin's default ACL access to Baseline, so a
// client reaches only what its roles name. It is idempotent.
func (d *Dynsec) EnsureBaseline(ctx context.Context) error {
	var acls []map[string]any
	for _, t := range []string{"publishClientSend", "publishClientReceive", "subscribe", "unsubscribe"} {
		acls = append(acls, map[string]any{"acltype": t, "allow": Baseline[t]})
	}
	rs, err := d.do(ctx, command{"command": "setDefaultACLAccess", "acls": acls})
	if err != nil {
		return err
	}
	return rs[0].err()
}

// Provision creates device deviceID's client, with password and a role of
// its own that allows exactly its topics (mosquitto 2.0 does not expand %u
// in dynamic-security ACLs, so the topics are spelt out). If the device
// exists its password and ACL are replaced, and mosquitto disconnects its
// open sessions. Retrying is safe.
func (d *Dynsec) Provision(ctx context.Context, deviceID, password string) error {
	if err := d.checkDevice(deviceID); err != nil {
		return err
	}
	if password == "" {
		return fmt.Errorf("provision %s: empty password", deviceID)
	}
	if err := d.upsert(ctx, deviceID, password, deviceMarker, DeviceRolePrefix+deviceID, d.deviceACLs(deviceID)); err != nil {
		return fmt.Errorf("provision %s: %w", deviceID, err)
	}
	return nil
}

// ProvisionControl creates (or updates) a control-plane client that may
// publish and subscribe anywhere under the scheme's prefix, shared
// subscriptions included.
func (d *Dynsec) ProvisionControl(ctx context.Context, username, password string) error {
	if username == "" || username == d.admin || password == "" {
		return fmt.Errorf("provision control user %q: empty name or password, or the admin itself", username)
	}
	if err := d.upsert(ctx, username, password, controlMarker, ControlRole, d.controlACLs()); err != nil {
		return fmt.Errorf("provision control user %s: %w", username, err)
	}
	return nil
}

// Revoke deletes device deviceID's client, which disconnects it at once,
// and its role. Revoking a device that does not exist is not an error.
func (d *Dynsec) Revoke(ctx context.Context, deviceID string) error {
	if err := d.checkDevice(deviceID); err != nil {
		return err
	}
	role := DeviceRolePrefix + deviceID
	cmds := []command{{"command": "deleteClient", "username": deviceID}, {"command": "deleteRole", "rolename": role}}
	switch marker, err := d.marker(ctx, deviceID); {
	case errors.Is(err, errNoClient):
		cmds = cmds[1:] // a role may be left from a provision cut short
	case err != nil:
		return fmt.Errorf("revoke %s: %w", deviceID, err)
	case marker != deviceMarker:
		return fmt.Errorf("revoke %s: %w", deviceID, ErrNotOurs)
	}
	rs, err := d.do(ctx, cmds...)
	if err != nil {
		return fmt.Errorf("revoke %s: %w", deviceID, err)
	}
	for _, r := range rs {
		if r.Error != "" && r.Error != errClientNotFound && r.Error != errRoleNotFound {
			return fmt.Errorf("revoke %s: %w", deviceID, r.err())
		}
	}
	return nil
}

// checkDevice refuses an ID that cannot be a device, and the admin's own
// username: a device with that ID would lock the administrator out.
func (d *Dynsec) checkDevice(id string) error {
	if err := topic.ValidID(id); err != nil {
		return err
	}
	if id == d.admin {
		return fmt.Errorf("device %s: %w (it is the dynsec admin)", id, ErrNotOurs)
	}
	return nil
}

// upsert creates or replaces a client with one role. A new client takes
// one round trip and two writes of the plugin's JSON (it rewrites the whole
// file on every change, so fewer commands is faster); an existing one two
// more round trips, one of them checking that the client is ours.
func (d *Dynsec) upsert(ctx context.Context, username, password, marker, role string, acls []map[string]any) error {
	rs, err := d.do(ctx,
		command{"command": "createRole", "rolename": role, "acls": acls},
		command{"command": "createClient", "username": username, "password": password,
			"textname": marker, "roles": []map[string]any{{"rolename": role}}},
	)
	if err != nil {
		return err
	}
	roleExisted := rs[0].Error == errRoleExists
	if rs[0].Error != "" && !roleExisted {
		return rs[0].err()
	}
	var follow []command
	if roleExisted { // make its ACLs today's
		follow = append(follow, command{"command": "modifyRole", "rolename": role, "acls": acls})
	}
	switch rs[1].Error {
	case "":
	case errClientExists:
		got, err := d.marker(ctx, username)
		if err != nil {
			return err
		}
		if got != marker {
			if !roleExisted { // do not leave the role just made for nobody
				_, _ = d.do(ctx, command{"command": "deleteRole", "rolename": role})
			}
			return ErrNotOurs
		}
		follow = append(follow, command{"command": "modifyClient", "username": username, "password": password,
			"textname": marker, "roles": []map[string]any{{"rolename": role}}})
	default:
		return rs[1].err()
	}
	if len(follow) == 0 {
		return nil
	}
	rs, err = d.do(ctx, follow...)
	if err != nil {
		return err
	}
	for _, r := range rs {
		if err := r.err(); err != nil {
			return err
		}
	}
	return nil
}

var errNoClient = errors.New("no such client")

// marker returns the text name of client username, errNoClient if it does
// not exist.
func (d *Dynsec) marker(ctx context.Context, username string) (string, error) {
	rs, err := d.do(ctx, command{"command": "getClient", "username": username})
	if err != nil {
		return "", err
	}
	if rs[0].Error == errClientNotFound {
		return "", errNoClient
	}
	if err := rs[0].err(); err != nil {
		return "", err
	}
	var data struct {
		Client struct {
			TextName string `json:"textname"`
		} `json:"client"`
	}
	if err := json.Unmarshal(rs[0].Data, &data); err != nil {
		return "", fmt.Errorf("decode getClient %s: %w", username, err)
	}
	return data.Client.TextName, nil
}

// deviceACLs turns a device's rules into dynamic-security ACLs: a write is
// publishClientSend; a read is a subscribe ACL (literal for a concrete
// topic, pattern for a per-bundle filter) plus publishClientReceive. Like
// topic.Scheme.DeviceMaySubscribe, no wildcard filter is admitted.
func (d *Dynsec) deviceACLs(deviceID string) []map[string]any {
	var out []map[string]any
	for _, r := range d.scheme.DeviceRules(deviceID) {
		if r.Write {
			out = append(out, acl("publishClientSend", r.Topic))
			continue
		}
		if strings.ContainsAny(r.Topic, "+#") {
			// The pattern admits each bundle's topic; the literal deny, checked
			// first, refuses the wildcard filter itself (every bundle at once).
			deny := acl("subscribeLiteral", r.Topic)
			deny["allow"], deny["priority"] = false, 1
			out = append(out, deny, acl("subscribePattern", r.Topic), acl("publishClientReceive", r.Topic))
			continue
		}
		out = append(out, acl("subscribeLiteral", r.Topic), acl("publishClientReceive", r.Topic))
	}
	return out
}

// controlACLs allows everything under the prefix, shared subscriptions too.
func (d *Dynsec) controlACLs() []map[string]any {
	all := d.scheme.Prefix() + "/#"
	return []map[string]any{
		acl("publishClientSend", all),
		acl("publishClientReceive", all),
		acl("subscribePattern", all),
		acl("subscribePattern", topic.Shared("+", all)),
	}
}

func acl(typ, topic string) map[string]any {
	return map[string]any{"acltype": typ, "topic": topic, "allow": true}
}
