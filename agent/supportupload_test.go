package agent

import (
	"testing"
	"time"
)

// TestSupportPacer: with a budget, an hour's worth goes at once and the
// rest waits for the budget's rate; without one nothing waits. Simulated
// time.
func TestSupportPacer(t *testing.T) {
	t0 := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	p := newPacer(86400*100, t0) // 100 B/s, burst 360 000 B
	if w := p.take(360_000, t0); w != 0 {
		t.Fatalf("the burst waited %v", w)
	}
	if w := p.take(1000, t0); w != 10*time.Second {
		t.Fatalf("1000 B over the burst waits %v, want 10s", w)
	}
	// Ten seconds later the debt is paid: the next 500 B wait 5 s.
	if w := p.take(500, t0.Add(10*time.Second)); w != 5*time.Second {
		t.Fatalf("waited %v, want 5s", w)
	}
	p.refund(500)
	if w := p.take(0, t0.Add(10*time.Second)); w != 0 {
		t.Fatalf("after a refund: %v", w)
	}
	if w := newPacer(0, t0).take(1<<30, t0); w != 0 {
		t.Fatalf("no budget, waited %v", w)
	}
}
