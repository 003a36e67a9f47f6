package agent

import (
	"context"
	"errors"
	"time"

	"github.com/flotilla-edge/flotilla/agent/metrics"
	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// TelemetryConfig tunes the metrics buffer (agent/metrics, in the data
// folder) that every inference is recorded in, and the telemetry it
// sends. Zero values take the defaults.
type TelemetryConfig struct {
	// Window is the summary window (default 60 s), on the agent's clock.
	Window time.Duration
	// QuotaBytes caps the metrics database (default 64 MiB).
	QuotaBytes int64
	// BudgetBytesPerDay caps telemetry bytes on a metered link; 0 = none.
	BudgetBytesPerDay int64
	// MessagesPerSecond paces the outbox's drain (default 20).
	MessagesPerSecond float64
	// AckTimeout is how long a sent summary waits for the control
	// plane's acknowledgement before it is sent again (default 30 s).
	AckTimeout time.Duration
	// CheckInterval is how often windows are closed and the outbox
	// drained, on the agent's clock (default a quarter of the window, at
	// most 5 s).
	CheckInterval time.Duration
}

func (c TelemetryConfig) checkInterval() time.Duration {
	if c.CheckInterval > 0 {
		return c.CheckInterval
	}
	w := c.Window
	if w <= 0 {
		w = time.Minute
	}
	return max(10*time.Millisecond, min(w/4, 5*time.Second))
}

// publishTimeout bounds one telemetry publish (the broker's PUBACK).
const publishTimeout = 10 * time.Second

// openTelemetry opens the metrics buffer and has the models' monitor
// record into it.
func (a *Agent) openTelemetry(ctx context.Context, m *models) error {
	buf, err := a.openBuffer(ctx, m.mon, m.mon)
	if err != nil {
		return err
	}
	m.buf, m.mon.rec = buf, buf
	return nil
}

// openBuffer opens the metrics buffer: in the data folder, or in memory
// with Config.MemoryState.
func (a *Agent) openBuffer(ctx context.Context, bl metrics.Baselines, cs metrics.CounterSource) (*metrics.Buffer, error) {
	tc := a.cfg.Telemetry
	opt := metrics.Options{Now: a.clock.Now, Window: tc.Window,
		QuotaBytes: tc.QuotaBytes, BudgetBytesPerDay: tc.BudgetBytesPerDay, MessagesPerSecond: tc.MessagesPerSecond,
		AckTimeout: tc.AckTimeout, Baselines: bl, Counters: cs}
	if a.cfg.MemoryState {
		return metrics.OpenMemory(ctx, opt)
	}
	return metrics.Open(ctx, a.cfg.DataDir, opt)
}

// Recorder is the metrics buffer that Config.TelemetryWithoutModels opens,
// while Run runs it; nil before, after, or without one. Records made into
// it are summarised and sent as a model's inferences are.
func (a *Agent) Recorder() metrics.Recorder {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tele == nil {
		return nil
	}
	return a.tele
}

// runTelemetry closes windows and drains the outbox on its own goroutine:
// every check interval, after each (re)connect (kickTelemetry) and when
// acknowledgements arrive. Acks are applied here, never on the MQTT
// client's goroutine: Drain holds the outbox while it waits for PUBACKs
// and Ack takes the same lock. Drain paces itself (messages per second,
// byte budget); kicks coalesce. Offline, windows still close and the
// outbox grows; on reconnect it drains in sequence order.
func (s *session) runTelemetry(ctx context.Context) {
	b := s.buf
	b.SetDevice(s.id.DeviceID)
	every := s.a.cfg.Telemetry.checkInterval()
	tick := s.a.clock.After(every)
	for {
		select {
		case <-ctx.Done():
			return
		case ack := <-s.acks:
			s.applyAck(ctx, ack)
			for more := true; more; {
				select {
				case ack := <-s.acks:
					s.applyAck(ctx, ack)
				default:
					more = false
				}
			}
		case <-s.teleKick:
		case <-tick:
			tick = s.a.clock.After(every)
			if n, err := b.CloseWindows(ctx); err != nil && ctx.Err() == nil {
				s.a.log.Warn("telemetry: closing windows", "err", err)
			} else if n > 0 {
				s.a.log.Debug("telemetry: summaries made", "summaries", n)
			}
		}
		s.drainTelemetry(ctx)
	}
}

func (s *session) applyAck(ctx context.Context, ack *flotillapb.Ack) {
	if _, err := s.buf.Ack(ctx, ack); err != nil && ctx.Err() == nil {
		s.a.log.Warn("telemetry: applying ack", "err", err)
	}
}

var errOffline = errors.New("not connected")

// drainTelemetry publishes what the outbox has due, while connected.
func (s *session) drainTelemetry(ctx context.Context) {
	if s.current() == nil {
		return
	}
	_, err := s.buf.Drain(ctx, func(ctx context.Context, t *flotillapb.Telemetry) error {
		conn := s.current()
		if conn == nil {
			return errOffline
		}
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		defer cancel()
		return s.publish(pctx, conn, topic.Telemetry, t)
	})
	if err != nil && ctx.Err() == nil && !errors.Is(err, errOffline) {
		s.a.log.Debug("telemetry: drain", "err", err)
	}
}

// kickTelemetry asks the telemetry goroutine to drain now. It never
// blocks.
func (s *session) kickTelemetry() {
	select {
	case s.teleKick <- struct{}{}:
	default:
	}
}

// queueAck hands an acknowledgement to the telemetry goroutine; when its
// queue is full the ack is dropped (the summary is sent again after the
// ack timeout and acknowledged as a duplicate).
func (s *session) queueAck(ack *flotillapb.Ack) {
	select {
	case s.acks <- ack:
	default:
		s.a.count(CounterInboundDropped)
	}
}
