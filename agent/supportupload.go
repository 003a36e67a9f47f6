package agent

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// SupportBundler builds a signed support bundle for the control plane:
// the archive's bytes and its detached signature (agent/diag's Signature
// JSON), at most max bytes (0 = no limit). flotilla-agent sets it to
// agent/diag's server; without it a support-bundle command is answered
// "not served".
type SupportBundler func(ctx context.Context, max int64) (bundle, sig []byte, err error)

// SetSupportBundler sets what builds support bundles. Safe at any time.
func (a *Agent) SetSupportBundler(f SupportBundler) {
	a.dg.mu.Lock()
	a.dg.bundler = f
	a.dg.mu.Unlock()
}

// Support upload tuning.
const (
	defaultSupportChunk = 256 << 10
	// supportAckTimeout is how long a sent chunk waits for its
	// acknowledgement before it is sent again.
	supportAckTimeout = 15 * time.Second
	// supportOfflineRetry is how often a paused upload looks for a
	// connection again.
	supportOfflineRetry = time.Second
)

// supportUpload is the one support bundle going up. It lives as long as
// Run, across connections: a reconnect resumes at the chunk the control
// plane last said it expects.
type supportUpload struct {
	id     string
	chunks int
	acks   chan *flotillapb.SupportAck
	cancel context.CancelFunc
}

// SupportAnswer is a support-bundle command's output (JSON).
type SupportAnswer struct {
	UploadID string `json:"upload_id"`
	Size     int    `json:"size"`
	SHA256   string `json:"sha256"`
	Chunks   int    `json:"chunks"`
}

// startSupportUpload builds the bundle asked for and starts its upload;
// the answer goes into the command result. A new request replaces an
// upload still running.
func (s *session) startSupportUpload(ctx context.Context, req *flotillapb.SupportBundle) ([]byte, error) {
	a := s.a
	a.dg.mu.Lock()
	build := a.dg.bundler
	a.dg.mu.Unlock()
	if build == nil {
		return nil, errors.New("support bundles are not served by this agent")
	}
	bundle, sig, err := build(ctx, int64(req.GetMaxSize()))
	if err != nil {
		return nil, err
	}
	size := int(req.GetChunkSize())
	if size <= 0 || size > flotillapb.MaxSupportChunk {
		size = defaultSupportChunk
	}
	n := max(1, (len(bundle)+size-1)/size)
	if n > flotillapb.MaxSupportChunks {
		return nil, fmt.Errorf("support bundle of %d bytes needs over %d chunks", len(bundle), flotillapb.MaxSupportChunks)
	}
	sum := sha256.Sum256(bundle)
	uctx, cancel := context.WithCancel(ctx)
	up := &supportUpload{id: req.GetUploadId(), chunks: n, acks: make(chan *flotillapb.SupportAck, 16), cancel: cancel}
	a.dg.mu.Lock()
	if old := a.dg.upload; old != nil {
		old.cancel()
	}
	a.dg.upload = up
	a.dg.mu.Unlock()
	go func() {
		defer cancel()
		err := s.runSupportUpload(uctx, up, bundle, sig, sum, size)
		a.dg.mu.Lock()
		if a.dg.upload == up {
			a.dg.upload = nil
		}
		a.dg.mu.Unlock()
		switch {
		case err == nil:
			a.log.Info("support bundle uploaded", "upload", up.id, "bytes", len(bundle), "chunks", n)
		case errors.Is(err, context.Canceled):
		default:
			a.log.Warn("support bundle upload stopped", "upload", up.id, "err", err)
		}
	}()
	return json.Marshal(SupportAnswer{UploadID: up.id, Size: len(bundle), SHA256: fmt.Sprintf("%x", sum), Chunks: n})
}

// runSupportUpload sends the chunks one at a time, each once its bytes
// fit the telemetry byte budget, and moves on as acknowledgements say.
// A chunk unacknowledged within supportAckTimeout is sent again; offline,
// it waits for the next connection.
func (s *session) runSupportUpload(ctx context.Context, up *supportUpload, bundle, sig []byte, sum [32]byte, size int) error {
	a := s.a
	pace := newPacer(a.cfg.Telemetry.BudgetBytesPerDay, a.clock.Now())
	next := 0
	for {
		lo := min(next*size, len(bundle))
		hi := min(lo+size, len(bundle))
		data := bundle[lo:hi]
		ch := sha256.Sum256(data)
		m := &flotillapb.SupportChunk{UploadId: up.id, DeviceId: s.id.DeviceID, Index: uint32(next), Count: uint32(up.chunks),
			TotalSize: uint64(len(bundle)), Sha256: sum[:], ChunkSha256: ch[:], Data: data}
		if next == up.chunks-1 {
			m.Signature = sig
		}
		if wait := pace.take(len(data), a.clock.Now()); wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-a.clock.After(wait):
			}
		}
		if conn := s.current(); conn == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-a.clock.After(supportOfflineRetry):
			}
			pace.refund(len(data))
			continue
		} else if err := s.publish(ctx, conn, topic.SupportUpload, m); err != nil {
			a.log.Warn("support chunk not sent; retrying", "upload", up.id, "index", next, "err", err)
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-a.clock.After(supportOfflineRetry):
			}
			pace.refund(len(data))
			continue
		}
		timeout := a.clock.After(supportAckTimeout)
	wait:
		for {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timeout:
				break wait // send it again
			case ack := <-up.acks:
				switch {
				case ack.GetError() != "":
					return fmt.Errorf("refused by the control plane: %s", ack.GetError())
				case ack.GetDone():
					return nil
				case int(ack.GetNext()) < up.chunks:
					next = int(ack.GetNext())
					break wait
				}
				// next == count but not done: the control plane is still
				// verifying; its final ack follows.
			}
		}
	}
}

// onSupportAck hands an acknowledgement to the running upload it names.
func (s *session) onSupportAck(m Message) {
	var ack flotillapb.SupportAck
	if err := wire.DecodeTopic(topic.SupportAck, m.Payload, &ack); err != nil {
		s.drop(m, err)
		return
	}
	if ack.GetDeviceId() != s.id.DeviceID {
		s.drop(m, fmt.Errorf("%w: support ack for %q", errOtherDevice, ack.GetDeviceId()))
		return
	}
	s.a.dg.mu.Lock()
	up := s.a.dg.upload
	s.a.dg.mu.Unlock()
	if up == nil || up.id != ack.GetUploadId() {
		return // an upload that ended or was replaced
	}
	select {
	case up.acks <- &ack:
	default: // the uploader is behind; a later ack says the same or more
	}
}

// pacer is a token bucket over bytes: the telemetry budget's rate
// (budget per day) with an hour's worth of burst; zero budget = none.
type pacer struct {
	rate, burst, tokens float64 // bytes per second, bytes, bytes
	at                  time.Time
}

func newPacer(perDay int64, now time.Time) *pacer {
	if perDay <= 0 {
		return &pacer{}
	}
	b := float64(perDay) / 24
	return &pacer{rate: float64(perDay) / 86400, burst: b, tokens: b, at: now}
}

// take spends n bytes and returns how long to wait before sending them.
func (p *pacer) take(n int, now time.Time) time.Duration {
	if p.rate == 0 {
		return 0
	}
	p.tokens = min(p.burst, p.tokens+now.Sub(p.at).Seconds()*p.rate)
	p.at = now
	p.tokens -= float64(n)
	if p.tokens >= 0 {
		return 0
	}
	return time.Duration(-p.tokens / p.rate * float64(time.Second))
}

// refund gives back bytes taken but not sent.
func (p *pacer) refund(n int) {
	if p.rate != 0 {
		p.tokens = min(p.burst, p.tokens+float64(n))
	}
}
