package metrics

import (
	"context"
	"errors"
	"fmt"
	"strings"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// Publish sends one telemetry message (the agent wires it to its MQTT
// session). An error leaves the message to be sent again.
type Publish func(ctx context.Context, t *pb.Telemetry) error

// ErrNoDevice is returned by Drain before SetDevice.
var ErrNoDevice = errors.New("metrics: device id not set")

// SetDevice sets the device ID the telemetry is sent as.
func (b *Buffer) SetDevice(id string) {
	b.mu.Lock()
	b.device = id
	b.mu.Unlock()
}

type outboxRow struct {
	seq, start, end, sent int64
	payload               []byte
}

// Drain publishes due outbox messages in sequence order: those never sent
// and those unacknowledged for AckTimeout, at most MaxInFlight
// unacknowledged at once, paced by the message rate and the byte budget.
// When the budget holds the backlog back, unsent messages are coarsened.
// It returns how many it published.
func (b *Buffer) Drain(ctx context.Context, publish Publish) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.device == "" {
		return 0, ErrNoDevice
	}
	now := b.opt.Now()
	rows, err := b.db.QueryContext(ctx, `SELECT seq, start_ms, end_ms, sent_ms, payload FROM outbox ORDER BY seq`)
	if err != nil {
		return 0, fmt.Errorf("metrics: drain: %w", err)
	}
	var due []outboxRow
	inflight := 0
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.seq, &r.start, &r.end, &r.sent, &r.payload); err != nil {
			rows.Close()
			return 0, err
		}
		if r.sent > 0 && now.UnixMilli()-r.sent < b.opt.AckTimeout.Milliseconds() {
			inflight++
			continue
		}
		due = append(due, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	n := 0
	for _, r := range due {
		if inflight >= b.opt.MaxInFlight {
			break
		}
		var s pb.Summaries
		if err := wire.Decode(r.payload, 1<<30, &s); err != nil {
			// Our own row, damaged: drop it, counted, rather than block the queue.
			b.evictedSummaries.Add(1)
			_, _ = b.db.ExecContext(ctx, `DELETE FROM outbox WHERE seq = ?`, r.seq)
			continue
		}
		t := &pb.Telemetry{DeviceId: b.device, Epoch: b.epoch, Sequence: uint64(r.seq), SentAtMs: now.UnixMilli(),
			Payload: &pb.Telemetry_Summaries{Summaries: &s}}
		size := float64(len(r.payload) + 64)
		if !b.bucket.take(1, now) {
			break
		}
		if !b.budget.take(size, now) {
			if _, err := b.coarsen(ctx, len(due)/2); err != nil {
				return n, err
			}
			break
		}
		if err := publish(ctx, t); err != nil {
			return n, fmt.Errorf("metrics: publish: %w", err)
		}
		if _, err := b.db.ExecContext(ctx, `UPDATE outbox SET sent_ms = ? WHERE seq = ?`, max(1, now.UnixMilli()), r.seq); err != nil {
			return n, err
		}
		b.sent.Add(1)
		inflight++
		n++
	}
	return n, nil
}

// Ack removes the acknowledged messages of this buffer's epoch. An Ack for
// another epoch (a previous database) or device changes nothing.
func (b *Buffer) Ack(ctx context.Context, a *pb.Ack) (int, error) {
	if a.GetEpoch() != b.epoch || len(a.GetSequences()) == 0 {
		return 0, nil
	}
	b.mu.Lock()
	dev := b.device
	b.mu.Unlock()
	if a.GetDeviceId() != dev {
		return 0, nil
	}
	args := make([]any, len(a.GetSequences()))
	for i, s := range a.GetSequences() {
		args[i] = int64(s)
	}
	res, err := b.db.ExecContext(ctx, `DELETE FROM outbox WHERE seq IN (?`+strings.Repeat(",?", len(args)-1)+`)`, args...)
	if err != nil {
		return 0, fmt.Errorf("metrics: ack: %w", err)
	}
	k, _ := res.RowsAffected()
	b.acked.Add(uint64(k))
	return int(k), nil
}

// Coarsen merges up to pairs pairs of adjacent never-sent outbox messages,
// so a backlog shrinks rather than queues forever; it returns how many
// messages it removed. A message that was sent is never merged: the
// control plane may have stored it.
func (b *Buffer) Coarsen(ctx context.Context, pairs int) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.coarsen(ctx, pairs)
}

func (b *Buffer) coarsen(ctx context.Context, pairs int) (int, error) {
	if pairs <= 0 {
		return 0, nil
	}
	rows, err := b.db.QueryContext(ctx, `SELECT seq, start_ms, end_ms, sent_ms, payload FROM outbox WHERE sent_ms = 0 ORDER BY seq`)
	if err != nil {
		return 0, err
	}
	var rs []outboxRow
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.seq, &r.start, &r.end, &r.sent, &r.payload); err != nil {
			rows.Close()
			return 0, err
		}
		rs = append(rs, r)
	}
	rows.Close()
	removed := 0
	for i := 0; i+1 < len(rs) && removed < pairs; i += 2 {
		merged, ok := b.mergePayloads(rs[i].payload, rs[i+1].payload)
		if !ok {
			continue
		}
		tx, err := b.db.BeginTx(ctx, nil)
		if err != nil {
			return removed, err
		}
		_, err1 := tx.ExecContext(ctx, `UPDATE outbox SET payload = ?, end_ms = ? WHERE seq = ?`, merged, rs[i+1].end, rs[i].seq)
		_, err2 := tx.ExecContext(ctx, `DELETE FROM outbox WHERE seq = ?`, rs[i+1].seq)
		if err := errors.Join(err1, err2); err != nil {
			tx.Rollback()
			return removed, err
		}
		if err := tx.Commit(); err != nil {
			return removed, err
		}
		removed++
		b.coarsened.Add(1)
	}
	return removed, nil
}

// mergePayloads merges two Summaries: a summary of b joins a's summary of
// the same model and release, or is appended. ok is false when the result
// would carry more than SummariesPerMessage summaries.
func (b *Buffer) mergePayloads(x, y []byte) ([]byte, bool) {
	var sx, sy pb.Summaries
	if wire.Decode(x, 1<<30, &sx) != nil || wire.Decode(y, 1<<30, &sy) != nil {
		return nil, false
	}
	for _, s := range sy.GetSummaries() {
		joined := false
		for i, t := range sx.Summaries {
			if t.GetModel() != s.GetModel() || t.GetRelease() != s.GetRelease() {
				continue
			}
			m, err := summary.Merge(t, s)
			if err != nil {
				break
			}
			bl := b.baseline(m.GetModel(), m.GetRelease())
			m.Scores = summary.Score(bl.Drift, m, bl.Thresholds, bl.MinRecords)
			sx.Summaries[i] = m
			joined = true
			break
		}
		if !joined {
			sx.Summaries = append(sx.Summaries, s)
		}
	}
	if len(sx.Summaries) > b.opt.SummariesPerMessage {
		return nil, false
	}
	out, err := wire.Encode(&sx)
	return out, err == nil
}
