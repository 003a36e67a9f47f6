package mosquittotest

import (
	"runtime"
	"strings"
	"testing"
)

// recorder is a testing.TB that records how Start ended the test.
type recorder struct {
	testing.TB
	how string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Skipf(string, ...any)      { r.how = "skip"; runtime.Goexit() }
func (r *recorder) Fatalf(string, ...any)     { r.how = "fatal"; runtime.Goexit() }
func (r *recorder) Fatal(...any)              { r.how = "fatal"; runtime.Goexit() }
func (r *recorder) TempDir() string           { return r.TB.TempDir() }
func (r *recorder) Cleanup(f func())          { r.TB.Cleanup(f) }
func (r *recorder) Logf(f string, a ...any)   { r.TB.Logf(f, a...) }
func (r *recorder) Errorf(f string, a ...any) { r.TB.Errorf(f, a...) }

// TestMissingBinary: without mosquitto a developer's run skips, CI fails.
func TestMissingBinary(t *testing.T) {
	saved := Binary
	Binary = "/nonexistent/mosquitto"
	t.Cleanup(func() { Binary = saved })
	for ci, want := range map[string]string{"": "skip", "true": "fatal"} {
		t.Setenv("CI", ci)
		r := &recorder{TB: t}
		done := make(chan struct{})
		go func() { defer close(done); Start(r, Options{}) }()
		<-done
		if r.how != want {
			t.Errorf("CI=%q: %s, want %s", ci, r.how, want)
		}
	}
}

func TestStartRestartStop(t *testing.T) {
	b := Start(t, Options{})
	b.MustDial(b.AdminUser, b.AdminPassword, nil)
	b.Restart()
	b.MustDial(b.AdminUser, b.AdminPassword, nil)
	if _, err := b.Dial(b.AdminUser, "wrong", nil); err == nil {
		t.Error("wrong admin password accepted")
	}
	b.Stop()
	b.Stop()
	if _, err := b.Dial(b.AdminUser, b.AdminPassword, nil); err == nil {
		t.Error("connected to a stopped broker")
	}
	if !strings.Contains(b.Log(), "mosquitto version") {
		t.Errorf("log: %q", b.Log())
	}
}
