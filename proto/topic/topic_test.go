package topic_test

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/proto/topic"
)

var update = flag.Bool("update", false, "rewrite docs/protocol.md's topic table")

func TestTableIsConsistent(t *testing.T) {
	seen := map[topic.Kind]bool{}
	paths := map[string]topic.Kind{}
	for _, e := range topic.Table {
		if seen[e.Kind] {
			t.Errorf("kind %s appears twice", e.Kind)
		}
		seen[e.Kind] = true
		if e.Publisher == 0 || e.Subscriber == 0 || e.Publisher&e.Subscriber != 0 {
			t.Errorf("%s: publisher %v and subscriber %v must be set and differ", e.Kind, e.Publisher, e.Subscriber)
		}
		if e.QoS > 1 {
			t.Errorf("%s: QoS %d; Flotilla uses 0 and 1 only", e.Kind, e.QoS)
		}
		if e.MaxSize <= 0 {
			t.Errorf("%s: no size limit", e.Kind)
		}
		key := string(rune('0'+e.Scope)) + e.Suffix
		if k, ok := paths[key]; ok {
			t.Errorf("%s and %s share a topic", e.Kind, k)
		}
		paths[key] = e.Kind
		if e.Scope != topic.PerDevice && e.Publisher == topic.Device {
			t.Errorf("%s: devices may publish only on their own topics", e.Kind)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	s := topic.Default()
	for _, e := range topic.Table {
		var name, id string
		switch e.Scope {
		case topic.PerDevice:
			id, name = "dev-1", s.Device(e.Kind, "dev-1")
		case topic.PerBundle:
			id, name = "digits.7", s.Bundle(e.Kind, "digits.7")
		default:
			name = s.Fleet(e.Kind)
		}
		k, gotID, ok := s.Parse(name)
		if !ok || k != e.Kind || gotID != id {
			t.Errorf("Parse(%q) = %q, %q, %v; want %q, %q", name, k, gotID, ok, e.Kind, id)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	s := topic.Default()
	for _, name := range []string{
		"", "flotilla/v1", "flotilla/v2/dev/a/birth", "flotilla/v1/dev/a", "flotilla/v1/dev//birth",
		"flotilla/v1/dev/+/birth", "flotilla/v1/dev/#", "flotilla/v1/dev/A/birth", "flotilla/v1/dev/a/b/birth",
		"flotilla/v1/dev/a/nope", "flotilla/v1/bundle/x/status", "xflotilla/v1/dev/a/birth",
	} {
		if k, id, ok := s.Parse(name); ok {
			t.Errorf("Parse(%q) = %q, %q, true; want refusal", name, k, id)
		}
	}
}

func TestValidID(t *testing.T) {
	for _, id := range []string{"a", "dev-1", "rpi4.serial_0001", strings.Repeat("x", 64)} {
		if err := topic.ValidID(id); err != nil {
			t.Errorf("ValidID(%q) = %v", id, err)
		}
	}
	for _, id := range []string{"", "-a", ".a", "A", "a/b", "a+", "a#", "$sys", "a b", "é", strings.Repeat("x", 65), "a\x00"} {
		if topic.ValidID(id) == nil {
			t.Errorf("ValidID(%q) accepted", id)
		}
	}
}

// TestDeviceAccess walks every row: a device may publish exactly the rows it
// publishes, for its own ID only, and read exactly the rows it subscribes to.
func TestDeviceAccess(t *testing.T) {
	s := topic.Default()
	for _, e := range topic.Table {
		var own, other string
		switch e.Scope {
		case topic.PerDevice:
			own, other = s.Device(e.Kind, "me"), s.Device(e.Kind, "you")
		case topic.PerBundle:
			own = s.Bundle(e.Kind, "b1")
		default:
			own = s.Fleet(e.Kind)
		}
		pub := e.Publisher&topic.Device != 0
		sub := e.Subscriber&topic.Device != 0
		if got := s.DeviceMayPublish("me", own); got != pub {
			t.Errorf("publish %s: %v, want %v", own, got, pub)
		}
		if got := s.DeviceMaySubscribe("me", own); got != sub {
			t.Errorf("subscribe %s: %v, want %v", own, got, sub)
		}
		if other != "" && (s.DeviceMayPublish("me", other) || s.DeviceMaySubscribe("me", other)) {
			t.Errorf("device me may touch %s", other)
		}
	}
	for _, f := range []string{"#", "flotilla/v1/#", "flotilla/v1/dev/+/desired", "flotilla/v1/dev/me/#", "$SYS/#", "flotilla/v1/bundle/+/chunks", "flotilla/v1/bundle/+/manifest"} {
		if s.DeviceMaySubscribe("me", f) {
			t.Errorf("device may subscribe to wildcard %q", f)
		}
	}
	if s.DeviceMayPublish("me", s.Device(topic.Desired, "me")) {
		t.Error("device may write its own desired state")
	}
	digest := strings.Repeat("ab", 32)
	if s.DeviceMayPublish("me", s.Bundle(topic.Manifest, digest)) || !s.DeviceMaySubscribe("me", s.Bundle(topic.Manifest, digest)) {
		t.Error("a device must read, never write, a bundle's manifest")
	}
	if !s.DeviceMayPublish("me", s.Device(topic.Progress, "me")) || s.DeviceMaySubscribe("me", s.Device(topic.Progress, "me")) {
		t.Error("a device writes, never reads, its own progress")
	}
}

func TestControlMay(t *testing.T) {
	s := topic.Default()
	for _, ok := range []string{"flotilla/v1/dev/a/birth", "flotilla/v1/#", "$share/cp/flotilla/v1/dev/+/telemetry"} {
		if !s.ControlMay(ok) {
			t.Errorf("ControlMay(%q) = false", ok)
		}
	}
	for _, bad := range []string{"#", "flotilla/v10/x", "$SYS/broker", "$share//flotilla/v1/x", "$share/cp"} {
		if s.ControlMay(bad) {
			t.Errorf("ControlMay(%q) = true", bad)
		}
	}
}

func TestNewPrefix(t *testing.T) {
	s, err := topic.New("acme/fleet")
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Device(topic.Birth, "d"); got != "acme/fleet/dev/d/birth" {
		t.Errorf("got %q", got)
	}
	for _, bad := range []string{"a/+", "#", "a//b", "/a", "$SYS"} {
		if _, err := topic.New(bad); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

func TestMosquittoACL(t *testing.T) {
	acl := topic.Default().MosquittoACL("flotilla-control")
	for _, want := range []string{
		"pattern write flotilla/v1/dev/%u/birth\n",
		"pattern read flotilla/v1/dev/%u/desired\n",
		"pattern read flotilla/v1/bundle/+/chunks\n",
		"user flotilla-control\ntopic readwrite flotilla/v1/#\n",
	} {
		if !strings.Contains(acl, want) {
			t.Errorf("ACL lacks %q:\n%s", want, acl)
		}
	}
	if strings.Contains(acl, "write flotilla/v1/dev/%u/desired") {
		t.Error("ACL lets a device write its desired state")
	}
}

// TestProtocolDocInSync: docs/protocol.md carries the table as the code
// has it. Regenerate with `go test ./proto/topic -run ProtocolDoc -update`.
func TestProtocolDocInSync(t *testing.T) {
	const path = "../../docs/protocol.md"
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	table := topic.Default().MarkdownTable()
	const begin, end = "<!-- topic table: begin -->\n", "<!-- topic table: end -->"
	i, j := strings.Index(string(doc), begin), strings.Index(string(doc), end)
	if i < 0 || j < i {
		t.Fatalf("%s lacks the %q … %q markers", path, begin, end)
	}
	if got := string(doc[i+len(begin) : j]); got != table {
		if *update {
			out := string(doc[:i+len(begin)]) + table + string(doc[j:])
			if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Fatalf("%s's topic table is stale; run go test ./proto/topic -run ProtocolDoc -update\nwant:\n%s", path, table)
	}
}
