package sim

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flotilla-edge/flotilla/agent/agenttest"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

func TestRunAllOnline(t *testing.T) {
	srv := agenttest.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	online := make(chan time.Duration, 1)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			N: 5, ServerURL: srv.URL(), EnrolToken: srv.Token(), CAFingerprint: srv.CAFingerprint(),
			DataDir: t.TempDir(), IDPrefix: "t", Labels: map[string]string{"sim": "yes"},
			Online: func(d time.Duration) { online <- d },
		})
	}()
	select {
	case <-online:
	case err := <-done:
		t.Fatalf("Run = %v before all were online", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not all devices came online")
	}
	for i := range 5 {
		b := agenttest.WaitFor[flotillapb.Birth](srv, 0, fmt.Sprintf("t-%04d", i), topic.Birth, nil)
		if b.GetLabels()["sim"] != "yes" {
			t.Errorf("birth = %v", b)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	for i := range 5 {
		if st := srv.RetainedStatus(fmt.Sprintf("t-%04d", i)); st.GetReason() != "shutdown" {
			t.Errorf("device %d status = %v", i, st)
		}
	}
}

func TestRunStopsOnRefusal(t *testing.T) {
	srv := agenttest.New(t)
	err := Run(context.Background(), Options{
		N: 2, ServerURL: srv.URL(), EnrolToken: "wrong", CAFingerprint: srv.CAFingerprint(), DataDir: t.TempDir(),
	})
	if err == nil {
		t.Fatal("Run = nil with a bad token")
	}
}
