package agent

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestBackoffBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for n := range 80 {
		ceil := backoffCap
		if n < 20 {
			ceil = min(backoffCap, backoffBase<<n)
		}
		var maxSeen time.Duration
		for range 200 {
			d := Backoff(n, backoffBase, backoffCap, r)
			if d < 0 || d > ceil {
				t.Fatalf("Backoff(%d) = %v, outside [0, %v]", n, d, ceil)
			}
			maxSeen = max(maxSeen, d)
		}
		// Full jitter spreads over the whole range, not just near the top or bottom.
		if maxSeen < ceil/2 {
			t.Errorf("Backoff(%d): largest of 200 draws %v, ceiling %v", n, maxSeen, ceil)
		}
	}
}

func TestBackoffDiffersAcrossSeeds(t *testing.T) {
	seq := func(seed uint64) []time.Duration {
		r := rand.New(rand.NewPCG(seed, seed))
		var out []time.Duration
		for n := range 10 {
			out = append(out, Backoff(n, backoffBase, backoffCap, r))
		}
		return out
	}
	if a, b := seq(1), seq(2); slices.Equal(a, b) {
		t.Errorf("two seeds gave the same delays: %v", a)
	}
	if a, b := seq(7), seq(7); !slices.Equal(a, b) {
		t.Errorf("one seed gave different delays: %v, %v", a, b)
	}
}

func TestBackoffEdges(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	if d := Backoff(0, 0, time.Second, r); d != 0 {
		t.Errorf("zero base: %v", d)
	}
	if d := Backoff(1000, time.Second, time.Minute, r); d > time.Minute {
		t.Errorf("huge attempt: %v", d)
	}
}
