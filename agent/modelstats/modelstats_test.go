package modelstats

import (
	"sync"
	"testing"
	"time"
)

func TestQuantilesWithinOneBucket(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Observe(time.Duration(i) * time.Microsecond)
	}
	s := h.Snapshot()
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Microsecond}, {0.95, 950 * time.Microsecond}, {0.99, 990 * time.Microsecond}} {
		got := s.Quantile(c.q)
		if got < c.want || float64(got) > float64(c.want)*1.091 {
			t.Errorf("q%.2f = %v, want %v..+9%%", c.q, got, c.want)
		}
	}
	var empty Histogram
	if q := empty.Snapshot().Quantile(0.5); q != 0 {
		t.Errorf("empty p50 = %v", q)
	}
	if b := bucketOf(time.Hour); b != numBuckets-1 {
		t.Errorf("an hour lands in bucket %d", b)
	}
	if b := bucketOf(0); b != 0 {
		t.Errorf("zero lands in bucket %d", b)
	}
}

func TestModelCountsPerReleaseAndTotal(t *testing.T) {
	r := NewRegistry()
	m := r.Model("digits")
	if r.Model("digits") != m {
		t.Fatal("Model made a second set of counters")
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				m.Observe(uint64(1+g%2), time.Millisecond, i%10 == 0)
			}
		}()
	}
	wg.Wait()
	m.Release(2).ObserveShadow(true, false)
	m.Release(2).ObserveShadow(false, false)
	m.Release(2).ObserveShadow(false, true)
	m.AddCrashes(2)
	m.AddRollback()
	s := m.Snapshot()
	if s.Total.Requests != 800 || s.Total.Errors != 80 || s.Crashes != 2 || s.Rollbacks != 1 {
		t.Errorf("totals %+v", s)
	}
	r2 := s.Releases[2]
	if r2.Requests != 400 || r2.ErrorRate() != 0.1 || r2.ShadowRuns != 3 || r2.DisagreementRate() != 0.5 {
		t.Errorf("release 2: %+v", r2)
	}
	if r2.P95 < time.Millisecond || r2.P95 > 1100*time.Microsecond {
		t.Errorf("p95 %v", r2.P95)
	}
	m.Forget(2)
	if _, ok := m.Snapshot().Releases[2]; ok {
		t.Error("release 2 not forgotten")
	}
	if got := r.Names(); len(got) != 1 || got[0] != "digits" {
		t.Errorf("names %v", got)
	}
}
