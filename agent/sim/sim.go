// Package sim runs many simulated devices in one process: N real agents,
// each with its own data folder, device ID and identity, against a real
// control plane. It is for load and soak tests of the control plane and the
// broker; each agent speaks the full protocol.
package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/agent"
	"github.com/flotilla-edge/flotilla/firmware/hostfacts"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Options configure a simulation.
type Options struct {
	N             int    // number of devices
	ServerURL     string // control-plane API, for enrolment
	EnrolToken    string // must allow N enrolments
	CAFingerprint string
	CAFile        string
	MQTTURL       string // overrides the broker URL the server returns
	DataDir       string // each device gets DataDir/<device ID>
	IDPrefix      string // device IDs are IDPrefix-0000, IDPrefix-0001…; "" = "sim"
	Labels        map[string]string
	Logger        *slog.Logger

	HeartbeatInterval time.Duration // 0 = the agent's default
	// Online is called once, when every device is connected.
	Online func(elapsed time.Duration)
}

// Run starts the devices and runs them until ctx is done. It returns nil
// after a clean shutdown, or the first error that stopped a device (which
// stops the others).
func Run(ctx context.Context, o Options) error {
	if o.N <= 0 {
		return errors.New("sim: N must be positive")
	}
	if o.DataDir == "" {
		return errors.New("sim: data folder is required")
	}
	if o.IDPrefix == "" {
		o.IDPrefix = "sim"
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	facts, _ := hostfacts.Discover("/")
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	agents := make([]*agent.Agent, o.N)
	for i := range o.N {
		id := fmt.Sprintf("%s-%04d", o.IDPrefix, i)
		a, err := agent.New(agent.Config{
			DataDir:           filepath.Join(o.DataDir, id),
			DeviceID:          id,
			ServerURL:         o.ServerURL,
			EnrolToken:        o.EnrolToken,
			CAFile:            o.CAFile,
			CAFingerprint:     o.CAFingerprint,
			MQTTURL:           o.MQTTURL,
			Labels:            o.Labels,
			Version:           "sim",
			HeartbeatInterval: o.HeartbeatInterval,
			Logger:            log.With("device", id),
			Facts:             func() *flotillapb.Facts { return facts },
		})
		if err != nil {
			return fmt.Errorf("sim: %w", err)
		}
		agents[i] = a
	}

	start := time.Now()
	var wg sync.WaitGroup
	for _, a := range agents {
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				cancel(err)
			}
		})
	}
	wg.Go(func() { watchOnline(ctx, agents, start, log, o.Online) })
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}

// watchOnline reports once every agent is connected.
func watchOnline(ctx context.Context, agents []*agent.Agent, start time.Time, log *slog.Logger, online func(time.Duration)) {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n := 0
		for _, a := range agents {
			if a.Status().State == agent.StateConnected {
				n++
			}
		}
		if n == len(agents) {
			el := time.Since(start)
			log.Info("all devices online", "devices", n, "elapsed", el.Round(time.Millisecond))
			if online != nil {
				online(el)
			}
			return
		}
	}
}
