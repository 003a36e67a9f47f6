package mosquitto_test

import (
	"strings"
	"testing"

	"github.com/flotilla-edge/flotilla/controlplane/mosquitto"
	"github.com/flotilla-edge/flotilla/controlplane/mosquitto/mosquittotest"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// TestStaticFiles runs the small-site mode: a password file of PasswordLine
// lines and the ACL from topic.Scheme.MosquittoACL, enforced by mosquitto
// itself with the same allow/deny outcome as dynamic security.
func TestStaticFiles(t *testing.T) {
	var lines []string
	for _, u := range [][2]string{{"d1", "s1"}, {"d2", "s2"}, {cpUser, cpPassword}} {
		l, err := mosquitto.PasswordLine(u[0], u[1])
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	b := mosquittotest.Start(t, mosquittotest.Options{
		Static:    true,
		Passwords: strings.Join(lines, "\n") + "\n",
		ACL:       scheme.MosquittoACL(cpUser),
	})
	if _, err := b.Dial("d1", "wrong", nil); err == nil {
		t.Fatal("wrong password accepted")
	}
	svc, svcIn := dial(t, b, cpUser, cpPassword, nil)
	publish(t, svc, scheme.Device(topic.Desired, "d1"), true, "desired-d1")
	publish(t, svc, scheme.Device(topic.Desired, "d2"), true, "desired-d2")
	subscribe(t, svc, scheme.Prefix()+"/#")
	svcIn.expect(t, scheme.Device(topic.Desired, "d1"), "desired-d1")
	svcIn.expect(t, scheme.Device(topic.Desired, "d2"), "desired-d2")

	d1, in := dial(t, b, "d1", "s1", nil)
	publish(t, d1, scheme.Device(topic.Birth, "d2"), false, "forged")
	publish(t, d1, scheme.Device(topic.Desired, "d1"), false, "forged")
	publish(t, d1, scheme.Device(topic.Birth, "d1"), false, "hello")
	svcIn.expect(t, scheme.Device(topic.Birth, "d1"), "hello")
	svcIn.none(t)

	// With acl_file, mosquitto 2.0.11 grants a SUBSCRIBE to a topic the user
	// cannot read (code 1) but delivers nothing, retained messages included.
	t.Logf("static subscribe code %#x", subscribe(t, d1, scheme.Device(topic.Desired, "d2")))
	own := scheme.Device(topic.Desired, "d1")
	subscribe(t, d1, own)
	in.expect(t, own, "desired-d1")
	publish(t, svc, scheme.Device(topic.Desired, "d2"), true, "desired-d2-v2")
	publish(t, svc, own, true, "desired-d1-v2")
	in.expect(t, own, "desired-d1-v2")
	in.none(t)
}
