// Package topic declares Flotilla's MQTT topic scheme in one table: every
// topic, who publishes it, who subscribes, its QoS, whether it is retained,
// the protobuf message it carries and its size limit.
//
// Everything else is derived from the table: the topic names the agent and
// the control plane use, the access rules the embedded broker enforces, the
// Mosquitto ACL and dynamic-security roles, and docs/protocol.md. A device
// touches only its own topics, and never writes its desired state or bundle
// topics.
package topic

import (
	"errors"
	"fmt"
	"strings"
)

// DefaultPrefix is the root of every Flotilla topic.
const DefaultPrefix = "flotilla/v1"

// Party is a kind of MQTT client.
type Party uint8

const (
	// Device is an agent, authenticated as one device.
	Device Party = 1 << iota
	// Control is the control plane, authenticated as a service.
	Control
)

func (p Party) String() string {
	switch p {
	case Device:
		return "device"
	case Control:
		return "control plane"
	case Device | Control:
		return "device, control plane"
	}
	return fmt.Sprintf("Party(%d)", uint8(p))
}

// Kind names one row of the table.
type Kind string

// The topic kinds.
const (
	Birth         Kind = "birth"
	Status        Kind = "status"
	Heartbeat     Kind = "heartbeat"
	Reported      Kind = "reported"
	Desired       Kind = "desired"
	Telemetry     Kind = "telemetry"
	Ack           Kind = "ack"
	Command       Kind = "cmd"
	CommandResult Kind = "cmd-result"
	ChunkRequest  Kind = "chunk-req"
	ChunkRepair   Kind = "chunks"
	BundleChunks  Kind = "bundle-chunks"
	ReleaseMeta   Kind = "release-meta"
	Manifest      Kind = "bundle-manifest"
	Progress      Kind = "progress"
	SupportUpload Kind = "support-upload"
	SupportAck    Kind = "support-ack"
)

// Scope says which placeholder a topic pattern has.
type Scope uint8

const (
	// PerDevice topics live under {prefix}/dev/{device}/.
	PerDevice Scope = iota
	// PerBundle topics live under {prefix}/bundle/{bundle}/.
	PerBundle
	// Fleet topics are shared by every device.
	Fleet
)

// Entry is one row of the topic table.
type Entry struct {
	Kind       Kind
	Scope      Scope
	Suffix     string // the last segment(s) after the scope's path
	Publisher  Party
	Subscriber Party
	QoS        byte
	Retained   bool
	Message    string // fully qualified protobuf message name; "" for raw bytes
	MaxSize    int    // largest payload a receiver accepts, in bytes
	Doc        string
}

const (
	kib = 1 << 10
	mib = 1 << 20
)

// Table is the topic scheme. Changing a row is a protocol change: bump
// ProtocolVersion in proto/wire and record it in docs/protocol.md.
var Table = []Entry{
	{Birth, PerDevice, "birth", Device, Control, 1, true, "flotilla.v1.Birth", 64 * kib,
		"identity, versions and hardware facts; sent on every connect"},
	{Status, PerDevice, "status", Device, Control, 1, true, "flotilla.v1.Status", 4 * kib,
		"online after connecting; offline as the last will or on clean shutdown"},
	{Heartbeat, PerDevice, "heartbeat", Device, Control, 0, false, "flotilla.v1.Heartbeat", 4 * kib,
		"liveness and counters, every heartbeat interval"},
	{Reported, PerDevice, "reported", Device, Control, 1, true, "flotilla.v1.ReportedState", 256 * kib,
		"what the device runs, after every change"},
	{Desired, PerDevice, "desired", Control, Device, 1, true, "flotilla.v1.DesiredState", 1024 * kib,
		"what the device should run: the director's signed metadata plus unsigned hints"},
	{Telemetry, PerDevice, "telemetry", Device, Control, 1, false, "flotilla.v1.Telemetry", 1024 * kib,
		"metrics summaries and events, kept on the device until acknowledged"},
	{Ack, PerDevice, "ack", Control, Device, 1, false, "flotilla.v1.Ack", 64 * kib,
		"application-level acknowledgement of telemetry"},
	{Command, PerDevice, "cmd", Control, Device, 1, false, "flotilla.v1.Command", 64 * kib,
		"an operator command"},
	{CommandResult, PerDevice, "cmd-result", Device, Control, 1, false, "flotilla.v1.CommandResult", 128 * kib,
		"the answer to a command"},
	{ChunkRequest, PerDevice, "chunk-req", Device, Control, 1, false, "flotilla.v1.ChunkRequest", 64 * kib,
		"the chunks of a bundle a device missed"},
	{ChunkRepair, PerDevice, "chunks", Control, Device, 0, false, "flotilla.v1.Chunk", 512 * kib,
		"chunks sent to one device that missed them"},
	{BundleChunks, PerBundle, "chunks", Control, Device, 0, false, "flotilla.v1.Chunk", 512 * kib,
		"a wave's chunks, published once and fanned out by the broker"},
	{ReleaseMeta, Fleet, "release/meta", Control, Device, 1, true, "flotilla.v1.ReleaseMetadata", 1024 * kib,
		"the release repository's signed TUF metadata"},
	{Manifest, PerBundle, "manifest", Control, Device, 1, true, "flotilla.v1.BundleManifest", 4 * mib,
		"the manifest's exact bytes: their SHA-256 is the TUF target hash and {bundle} that digest in hex"},
	{Progress, PerDevice, "progress", Device, Control, 0, false, "flotilla.v1.FetchProgress", 4 * kib,
		"a device's progress fetching and staging one bundle"},
	{SupportUpload, PerDevice, "support-upload", Device, Control, 1, false, "flotilla.v1.SupportChunk", 320 * kib,
		"one chunk of a support bundle the control plane asked for, paced within the telemetry budget"},
	{SupportAck, PerDevice, "support-ack", Control, Device, 1, false, "flotilla.v1.SupportAck", 4 * kib,
		"the next support chunk the control plane expects; done or refused"},
}

// Lookup returns the table row of a kind.
func Lookup(k Kind) (Entry, bool) {
	for _, e := range Table {
		if e.Kind == k {
			return e, true
		}
	}
	return Entry{}, false
}

// MustLookup is Lookup for kinds known at compile time.
func MustLookup(k Kind) Entry {
	e, ok := Lookup(k)
	if !ok {
		panic("topic: unknown kind " + string(k))
	}
	return e
}

// ErrInvalidID reports a device or bundle ID that cannot be part of a topic.
var ErrInvalidID = errors.New("invalid id")

// ValidID checks a device or bundle ID: 1 to 64 characters of lowercase
// letters, digits, '-', '_' and '.', starting with a letter or digit. No
// MQTT wildcard, separator or '$' can appear, so an ID can never widen a
// topic or an ACL rule.
func ValidID(id string) error {
	if len(id) == 0 || len(id) > 64 {
		return fmt.Errorf("%w %q: must be 1 to 64 characters", ErrInvalidID, id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '-' || c == '_' || c == '.'):
		default:
			return fmt.Errorf("%w %q: only a-z, 0-9, '-', '_' and '.' (not first) are allowed", ErrInvalidID, id)
		}
	}
	return nil
}

// validPrefix checks a topic prefix: non-empty segments, no wildcards, no '$'.
func validPrefix(p string) error {
	if p == "" {
		return errors.New("topic prefix is empty")
	}
	if strings.ContainsAny(p, "+#$") || strings.ContainsRune(p, 0) {
		return fmt.Errorf("topic prefix %q contains a wildcard, '$' or NUL", p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" {
			return fmt.Errorf("topic prefix %q has an empty segment", p)
		}
	}
	return nil
}
