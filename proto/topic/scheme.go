package topic

import (
	"fmt"
	"strings"
)

// Scheme is the topic table under one prefix.
type Scheme struct {
	prefix string
}

// New returns the scheme under prefix; "" means DefaultPrefix.
func New(prefix string) (Scheme, error) {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if err := validPrefix(prefix); err != nil {
		return Scheme{}, err
	}
	return Scheme{prefix: prefix}, nil
}

// Default is the scheme under DefaultPrefix.
func Default() Scheme { return Scheme{prefix: DefaultPrefix} }

// Prefix returns the scheme's root.
func (s Scheme) Prefix() string { return s.prefix }

// pattern renders an entry's topic with id in its placeholder. id is "+"
// for a subscription filter over every device or bundle.
func (s Scheme) pattern(e Entry, id string) string {
	switch e.Scope {
	case PerDevice:
		return s.prefix + "/dev/" + id + "/" + e.Suffix
	case PerBundle:
		return s.prefix + "/bundle/" + id + "/" + e.Suffix
	default:
		return s.prefix + "/" + e.Suffix
	}
}

// Device returns the topic of kind k for one device. It panics on a kind
// that is not per device: that is a programming error.
func (s Scheme) Device(k Kind, deviceID string) string {
	e := MustLookup(k)
	if e.Scope != PerDevice {
		panic("topic: " + string(k) + " is not a per-device topic")
	}
	return s.pattern(e, deviceID)
}

// Bundle returns the topic of kind k for one bundle.
func (s Scheme) Bundle(k Kind, bundleID string) string {
	e := MustLookup(k)
	if e.Scope != PerBundle {
		panic("topic: " + string(k) + " is not a per-bundle topic")
	}
	return s.pattern(e, bundleID)
}

// Fleet returns a fleet-wide topic.
func (s Scheme) Fleet(k Kind) string {
	e := MustLookup(k)
	if e.Scope != Fleet {
		panic("topic: " + string(k) + " is not a fleet topic")
	}
	return s.pattern(e, "")
}

// AllDevices returns the subscription filter for kind k over every device.
func (s Scheme) AllDevices(k Kind) string {
	e := MustLookup(k)
	if e.Scope != PerDevice {
		panic("topic: " + string(k) + " is not a per-device topic")
	}
	return s.pattern(e, "+")
}

// Shared returns filter as a shared subscription of group, so several
// control-plane replicas split the messages between them.
func Shared(group, filter string) string {
	return "$share/" + group + "/" + filter
}

// Parse splits a concrete topic into its kind and the device or bundle ID it
// names. ok is false for a topic outside the scheme or with an invalid ID.
func (s Scheme) Parse(topic string) (k Kind, id string, ok bool) {
	rest, found := strings.CutPrefix(topic, s.prefix+"/")
	if !found {
		return "", "", false
	}
	var scope Scope
	switch {
	case strings.HasPrefix(rest, "dev/"):
		scope, rest = PerDevice, rest[len("dev/"):]
	case strings.HasPrefix(rest, "bundle/"):
		scope, rest = PerBundle, rest[len("bundle/"):]
	default:
		for _, e := range Table {
			if e.Scope == Fleet && e.Suffix == rest {
				return e.Kind, "", true
			}
		}
		return "", "", false
	}
	id, suffix, found := strings.Cut(rest, "/")
	if !found || ValidID(id) != nil {
		return "", "", false
	}
	for _, e := range Table {
		if e.Scope == scope && e.Suffix == suffix {
			return e.Kind, id, true
		}
	}
	return "", "", false
}

// DeviceMayPublish reports whether device deviceID may publish on topic.
func (s Scheme) DeviceMayPublish(deviceID, topic string) bool {
	k, id, ok := s.Parse(topic)
	if !ok {
		return false
	}
	e := MustLookup(k)
	return e.Publisher&Device != 0 && e.Scope == PerDevice && id == deviceID
}

// DeviceMaySubscribe reports whether device deviceID may subscribe to
// filter. Devices subscribe to concrete topics only: a wildcard filter is
// refused even where every topic it matches would be allowed, which keeps
// the rule obviously correct.
func (s Scheme) DeviceMaySubscribe(deviceID, filter string) bool {
	if strings.ContainsAny(filter, "+#") {
		return false
	}
	k, id, ok := s.Parse(filter)
	if !ok {
		return false
	}
	e := MustLookup(k)
	if e.Subscriber&Device == 0 {
		return false
	}
	switch e.Scope {
	case PerDevice:
		return id == deviceID
	default:
		return true
	}
}

// ControlMay reports whether the control plane may use topic (publish or
// subscribe): everything under the prefix, directly or as a shared
// subscription.
func (s Scheme) ControlMay(topic string) bool {
	if strings.HasPrefix(topic, "$share/") {
		parts := strings.SplitN(topic, "/", 3)
		if len(parts) < 3 || parts[1] == "" {
			return false
		}
		topic = parts[2]
	}
	return topic == s.prefix || strings.HasPrefix(topic, s.prefix+"/")
}

// Rule is one access rule for a device, in the form brokers take.
type Rule struct {
	Topic string // a topic or filter; may contain the placeholder
	Write bool   // publish (true) or subscribe/receive (false)
}

// DeviceRules returns the access rules of one device with its topics spelt
// out, for brokers whose rules are per client (Mosquitto's dynamic
// security). deviceID "%u" gives Mosquitto's pattern form.
func (s Scheme) DeviceRules(deviceID string) []Rule {
	var out []Rule
	for _, e := range Table {
		id := deviceID
		if e.Scope == PerBundle {
			id = "+"
		}
		t := s.pattern(e, id)
		if e.Publisher&Device != 0 {
			out = append(out, Rule{Topic: t, Write: true})
		}
		if e.Subscriber&Device != 0 {
			out = append(out, Rule{Topic: t, Write: false})
		}
	}
	return out
}

// MosquittoACL renders the ACL file for Mosquitto's acl_file option:
// control-plane users get the whole prefix, every other user (a device,
// whose username is its device ID) gets its own topics through "pattern"
// lines.
func (s Scheme) MosquittoACL(controlUsers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Generated from proto/topic's table by flotilla-server; do not edit.\n")
	fmt.Fprintf(&b, "# Devices authenticate with their device ID as the username.\n\n")
	for _, r := range s.DeviceRules("%u") {
		mode := "read"
		if r.Write {
			mode = "write"
		}
		fmt.Fprintf(&b, "pattern %s %s\n", mode, r.Topic)
	}
	for _, u := range controlUsers {
		fmt.Fprintf(&b, "\nuser %s\ntopic readwrite %s/#\n", u, s.prefix)
	}
	return b.String()
}
