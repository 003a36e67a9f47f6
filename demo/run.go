package demo

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// Run is the one-command demo: Start, print how to watch, send traffic,
// report the rollout and drift every few seconds, shift the traffic
// shiftAfter once the rollout has completed, and stop everything when ctx
// ends (Ctrl-C).
func Run(ctx context.Context, cfg Config, shiftAfter time.Duration) error {
	cfg.defaults()
	d, err := Start(ctx, cfg)
	if err != nil {
		return err
	}
	defer func() {
		d.say("stopping the agents and the server")
		d.Close()
	}()
	fmt.Fprint(cfg.Out, d.Howto())

	var shifted atomic.Bool
	var counts Counts
	tctx, stopTraffic := context.WithCancel(ctx)
	trafficDone := make(chan struct{})
	go func() { defer close(trafficDone); d.Traffic(tctx, &shifted, &counts) }()
	defer func() { stopTraffic(); <-trafficDone }()
	d.say("traffic: the digits test split, %g inferences/s per device", cfg.RatePerDevice)

	start := time.Now()
	var completedAt, shiftedAt time.Time
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		line := fmt.Sprintf("t+%3.0fs  inferences ok %d (not serving yet %d, failed %d)", time.Since(start).Seconds(),
			counts.OK.Load(), counts.NotServing.Load(), counts.Failed.Load())
		if v, err := d.Rollout(ctx); err == nil {
			line += fmt.Sprintf("  rollout %s stage %d/%d %v", v.Phase, v.Stage+1, v.Stages, v.Devices)
			if v.Phase == "completed" && completedAt.IsZero() {
				completedAt = time.Now()
			}
		}
		from := start
		if !shiftedAt.IsZero() {
			from = shiftedAt
		}
		switch rd, ok, err := d.Drift(ctx, from); {
		case err != nil:
			line += "  drift: " + err.Error()
		case !ok:
			line += "  drift: no window closed yet"
		default:
			line += fmt.Sprintf("  drift %s (max js %.3f psi %.3f over %d requests)", rd.State, rd.Max.JS, rd.Max.PSI, rd.Requests)
		}
		fmt.Fprintln(cfg.Out, line)
		if !completedAt.IsZero() && shiftedAt.IsZero() && time.Since(completedAt) >= shiftAfter {
			shiftedAt = time.Now()
			shifted.Store(true)
			d.say("traffic shifted: a washed-out camera (0.3 + 0.5 × pixel); drift should show within a window or two")
		}
	}
}
