package mosquitto_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkProvision measures enrolment through the dynamic-security
// plugin: one Provision per new device, over one admin connection.
func BenchmarkProvision(b *testing.B) {
	f := newFixture(b)
	c, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.Run("serial", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			id := fmt.Sprintf("s-%d", i)
			if err := f.ds.Provision(c, id, "pw-"+id); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "devices/s")
	})
	b.Run("parallel", func(b *testing.B) {
		var n atomic.Int64
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				id := fmt.Sprintf("p-%d", n.Add(1))
				if err := f.ds.Provision(c, id, "pw-"+id); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "devices/s")
	})
}
