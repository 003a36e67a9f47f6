package server_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/mosquitto/mosquittotest"
	"github.com/flotilla-edge/flotilla/controlplane/server"
)

// TestBundleEndToEndMosquitto is TestBundleEndToEnd's install path on a
// real Mosquitto with dynamic security: the control plane provisions the
// device in the broker at enrolment, its release metadata, manifest,
// desired state, wave and repairs all pass through Mosquitto, and the
// agent stages release 1, then release 2 fetching only the changed
// file's chunks (a delta wave).
func TestBundleEndToEndMosquitto(t *testing.T) {
	b := mosquittotest.Start(t, mosquittotest.Options{AdminUser: "dynsec-admin", AdminPassword: secret()})
	dir := t.TempDir()
	keys := operatorKeys(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", MQTTURL: b.URL(),
		MQTTUser: "flotilla-control", MQTTPassword: secret(),
		Dynsec:    &server.Dynsec{AdminUser: b.AdminUser, AdminPassword: b.AdminPassword},
		WaveDelay: 300 * time.Millisecond, Version: "test", Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("%v\nbroker log:\n%s", err, b.Log())
	}
	t.Cleanup(func() { srv.Close() })
	if srv.BrokerAddr() != nil {
		t.Fatal("the embedded broker runs beside Mosquitto")
	}
	op := newOperator(t, srv, dir, keys)

	src1 := digitsSource(t, "1", nil)
	s1, d1 := op.release(src1, "1")
	dev := startAgent(t, op, "dev-mq")
	op.run("devices", "assign", "dev-mq", "digits", "1")
	eventually(t, "release 1 staged through mosquitto", func() bool { return dev.staged(t)["digits"].Release == 1 })
	if st := dev.staged(t)["digits"]; st.Digest != d1 {
		t.Fatalf("staged %s, want %s", st.Digest, d1)
	}
	sameFiles(t, s1, d1, src1, dev.staged(t)["digits"].Dir)

	before := dev.chunks(t)
	wave0, _ := srv.ChunksSent()
	src2 := digitsSource(t, "2", func(d string) { writeString(t, filepath.Join(d, "labels.txt"), "0 1 2 3 4 5 6 7 8 9\n") })
	s2, d2 := op.release(src2, "2")
	want := newChunks(t, s1, d1, s2, d2)
	op.run("devices", "assign", "dev-mq", "digits", "2")
	eventually(t, "release 2 staged through mosquitto", func() bool { return dev.staged(t)["digits"].Release == 2 })
	sameFiles(t, s2, d2, src2, dev.staged(t)["digits"].Dir)
	if got := dev.chunksAddedSince(t, before); got != want {
		t.Errorf("release 2 stored %d new chunks, want %d (labels.txt only)", got, want)
	}
	if wave1, _ := srv.ChunksSent(); wave1-wave0 != uint64(want) {
		t.Errorf("the delta wave sent %d chunks, want %d", wave1-wave0, want)
	}
	eventually(t, "reported through mosquitto", func() bool {
		m := reported(srv, "dev-mq")
		return m != nil && m.GetStagedRelease() == 2 && m.GetStagedDigest() == d2
	})
}
