package telemetry_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/mosquitto"
	"github.com/flotilla-edge/flotilla/controlplane/mosquitto/mosquittotest"
)

// TestMosquittoRestartMidDrain: a device drains a backlog of three hours
// of summaries through a real Mosquitto (its own process, on a free port)
// into the ingest and real SQLite; halfway, with messages just published
// and their acks not yet back, the broker restarts and both sides
// reconnect. Every summary is stored once, in sequence and time order, and
// the fleet totals equal what the device recorded.
func TestMosquittoRestartMidDrain(t *testing.T) {
	const minutes = 3 * 60
	clk := &fakeClock{t: t0}
	d := openDevice(t, clk, "dev-9")
	want := offlineDay(t, clk, d.buf, minutes)
	var lines []string
	for _, u := range [][2]string{{cpUser, cpPassword}, {d.id, "pw-" + d.id}} {
		l, err := mosquitto.PasswordLine(u[0], u[1])
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, l)
	}
	b := mosquittotest.Start(t, mosquittotest.Options{Static: true,
		Passwords: strings.Join(lines, "\n") + "\n", ACL: scheme.MosquittoACL(cpUser)})
	ctl := startControl(t, b.URL(), filepath.Join(t.TempDir(), "cp.db"), nil)
	defer ctl.stop()
	connectDevice(t, b.URL(), d)
	for pending(t, d) > minutes/2 {
		drainRound(t, d)
		clk.Advance(time.Second)
	}
	// Publish a round and restart before its acks can settle.
	before := ctl.in.Counters.Stored.Load()
	if _, err := d.buf.Drain(t.Context(), d.publish); err != nil {
		t.Fatal(err)
	}
	b.Restart()
	ctl.subscribe(t, b.URL())
	connectDevice(t, b.URL(), d)
	for round := 0; pending(t, d) > 0; round++ {
		if round > 2000 {
			t.Fatalf("drain stuck with %d pending", pending(t, d))
		}
		if drainRound(t, d) == 0 {
			clk.Advance(31 * time.Second) // past the ack timeout: resend
		}
		clk.Advance(time.Second)
	}
	checkExactlyOnce(t, ctl.st, minutes, want)
	t.Logf("stored %d before the restart, %d in all; duplicates %d", before, ctl.in.Counters.Stored.Load(),
		ctl.in.Counters.Duplicates.Load())
}
