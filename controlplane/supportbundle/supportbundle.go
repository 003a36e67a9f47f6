// Package supportbundle receives the support bundles devices upload when
// an operator asks for one (flotctl devices support-bundle): it expects an
// upload the command announced, takes its chunks in order from the
// device's own support-upload topic, acknowledges each on support-ack,
// checks every size and digest, stores the chunks in the control plane's
// database, verifies the reassembled bundle (streamed from the stored
// chunks) and the device's signature against the device's enrolled key
// (and the fleet CA, when the signature carries a certificate), and keeps
// the newest bundles of each device for the operator to download.
//
// The database is the only record of an upload: control-plane replicas
// sharing the device topics (an MQTT shared subscription deals an
// upload's chunks to any of them) each take a chunk in a transaction that
// reads and advances the upload's next index under a row lock, so they
// take the chunks in turn, never one twice, and any replica serves the
// finished bundle. A restarted server resumes where the database is.
//
// Everything a device sends is hostile until checked: a chunk for an
// upload nobody asked for, from another device, out of order, of the
// wrong size or digest, or a bundle over the size limit changes nothing
// but what the upload itself owns, and an upload that fails keeps only its
// failure record.
package supportbundle

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/supportsig"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// States of an upload.
const (
	StateUploading = "uploading"
	StateReady     = "ready"
	StateFailed    = "failed"
)

// Defaults.
const (
	DefaultMaxSize = 64 << 20
	DefaultKeep    = 5
	// DefaultIdle is how long an upload may go without a chunk before it
	// is failed (a device that went away for good).
	DefaultIdle = 24 * time.Hour
	// DefaultPoll is how often Wait reads an upload's state again: another
	// replica may be the one taking its chunks.
	DefaultPoll = time.Second
)

// opTimeout bounds the store calls of the methods that take no context.
const opTimeout = 30 * time.Second

// Errors callers can branch on.
var (
	ErrNotFound = errors.New("support bundle not found")
	ErrNotReady = errors.New("support bundle is not ready")
	ErrInvalid  = errors.New("invalid support bundle request")
)

// Publisher sends an MQTT message (the control plane's connection).
type Publisher interface {
	Publish(ctx context.Context, topic string, qos byte, retained bool, payload []byte) error
}

// Store is what the service needs of the control plane's store
// (controlplane/store implements it on SQLite and PostgreSQL).
type Store interface {
	CreateSupportUpload(ctx context.Context, u store.SupportUpload) error
	ImportSupportUpload(ctx context.Context, u store.SupportUpload, next func() ([]byte, error)) error
	SupportUpload(ctx context.Context, dev, id string) (store.SupportUpload, error)
	SupportUploads(ctx context.Context, dev string) ([]store.SupportUpload, error)
	StaleSupportUploads(ctx context.Context, state string, before int64, limit int) ([]store.SupportUpload, error)
	UpdateSupportUpload(ctx context.Context, dev, id string, fn func(u *store.SupportUpload) (store.SupportEdit, error)) (store.SupportUpload, error)
	SupportChunk(ctx context.Context, dev, id string, index uint32) ([]byte, error)
	PruneSupportUploads(ctx context.Context, dev string, keep int) (int, error)
}

// Config sets up a Service.
type Config struct {
	Store Store // where uploads and their chunks are kept
	// Dir is the folder an earlier release kept bundles in (DataDir/support),
	// imported into Store once and then renamed Dir.imported; "" or a
	// missing folder: nothing to import.
	Dir       string
	Scheme    topic.Scheme
	Publisher Publisher
	// DeviceKey returns a device's enrolled public key; an error (unknown
	// or decommissioned device) refuses its upload.
	DeviceKey func(ctx context.Context, deviceID string) (ed25519.PublicKey, error)
	// Roots is the fleet CA; a signature carrying a device certificate
	// must chain to it. nil: only the enrolled key is checked.
	Roots   *x509.CertPool
	MaxSize int64         // largest bundle accepted (default 64 MiB)
	Keep    int           // bundles kept per device, newest (default 5)
	Idle    time.Duration // default DefaultIdle
	Poll    time.Duration // default DefaultPoll
	Now     func() time.Time
	Logger  *slog.Logger
}

// Info describes one upload.
type Info struct {
	ID          string    `json:"id"`
	DeviceID    string    `json:"device_id"`
	State       string    `json:"state"`
	Error       string    `json:"error,omitempty"`
	RequestedBy string    `json:"requested_by,omitempty"`
	RequestedAt time.Time `json:"requested_at"`
	UpdatedAt   time.Time `json:"updated_at"`
	Size        int64     `json:"size"`     // the bundle's, once the first chunk came
	Received    int64     `json:"received"` // bytes stored
	SHA256      string    `json:"sha256,omitempty"`
	Chunks      uint32    `json:"chunks"`
	Next        uint32    `json:"next"`
	ChunkSize   int64     `json:"chunk_size,omitempty"`
	Verified    string    `json:"verified,omitempty"` // how the signature was checked
}

func infoOf(u store.SupportUpload) Info {
	return Info{ID: u.ID, DeviceID: u.DeviceID, State: u.State, Error: u.Error, RequestedBy: u.RequestedBy,
		RequestedAt: time.UnixMilli(u.RequestedAt).UTC(), UpdatedAt: time.UnixMilli(u.UpdatedAt).UTC(),
		Size: u.Size, Received: u.Received, SHA256: u.SHA256, Chunks: u.Chunks, Next: u.Next, ChunkSize: u.ChunkSize, Verified: u.Verified}
}

// Service is the control plane's support-bundle receiver. It holds no
// upload's state: every chunk reads it from the store.
type Service struct {
	cfg Config
	log *slog.Logger
	st  Store

	mu      sync.Mutex
	changed chan struct{}  // closed and replaced on every change made here
	sending sync.WaitGroup // acks in flight
}

// New sets up the service over its store and imports the folder an
// earlier release kept bundles in, if there is one.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.DeviceKey == nil {
		return nil, errors.New("supportbundle: Store and DeviceKey are required")
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.Idle <= 0 {
		cfg.Idle = DefaultIdle
	}
	if cfg.Poll <= 0 {
		cfg.Poll = DefaultPoll
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Service{cfg: cfg, log: cfg.Logger, st: cfg.Store, changed: make(chan struct{})}
	if cfg.Dir != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		s.importDir(ctx, cfg.Dir)
	}
	return s, nil
}

// MaxSize is the largest bundle accepted.
func (s *Service) MaxSize() int64 { return s.cfg.MaxSize }

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

// notify wakes the Waits of this process.
func (s *Service) notify() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

// Expect records an upload the control plane is about to ask device for
// and returns its ID.
func (s *Service) Expect(deviceID, actor string) (Info, error) {
	if err := topic.ValidID(deviceID); err != nil {
		return Info{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(actor) > 1024 {
		return Info{}, fmt.Errorf("%w: actor of %d bytes", ErrInvalid, len(actor))
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	now := s.now()
	u := store.SupportUpload{ID: now.Format("20060102t150405z") + "-" + hex.EncodeToString(b), DeviceID: deviceID, State: StateUploading,
		RequestedBy: actor, RequestedAt: now.UnixMilli(), UpdatedAt: now.UnixMilli()}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	if err := s.st.CreateSupportUpload(ctx, u); err != nil {
		return Info{}, err
	}
	s.notify()
	return infoOf(u), nil
}

// Fail ends an expected upload (the device refused or never answered).
func (s *Service) Fail(deviceID, id, why string) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	s.update(ctx, deviceID, id, func(u *store.SupportUpload) store.SupportEdit {
		if u.State != StateUploading {
			return store.SupportEdit{}
		}
		return s.fail(u, why)
	})
}

// fail marks u failed and drops its chunks (in an update).
func (s *Service) fail(u *store.SupportUpload, why string) store.SupportEdit {
	if len(why) > 1024 {
		why = why[:1024]
	}
	u.State, u.Error, u.UpdatedAt, u.Signature = StateFailed, why, s.now().UnixMilli(), nil
	return store.SupportEdit{Save: true, DropChunks: true}
}

// update runs fn on an upload under its row lock and logs a failure it
// brought; it returns the upload after, and whether fn saved a change.
func (s *Service) update(ctx context.Context, dev, id string, fn func(u *store.SupportUpload) store.SupportEdit) (store.SupportUpload, bool, error) {
	var was string
	saved := false
	u, err := s.st.UpdateSupportUpload(ctx, dev, id, func(u *store.SupportUpload) (store.SupportEdit, error) {
		was = u.State
		e := fn(u)
		saved = e.Save
		return e, nil
	})
	if err != nil {
		return u, false, err
	}
	if saved {
		s.notify()
		if was != StateFailed && u.State == StateFailed {
			s.log.Warn("support bundle upload failed", "device", dev, "upload", id, "why", u.Error)
		}
	}
	return u, saved, nil
}

// Handle takes one message if it is a support chunk and reports whether it
// was; it never fails: what it refuses is logged and, where the device
// can act on it, answered with an ack naming the error.
func (s *Service) Handle(ctx context.Context, name string, payload []byte) bool {
	k, dev, ok := s.cfg.Scheme.Parse(name)
	if !ok || k != topic.SupportUpload {
		return false
	}
	var c pb.SupportChunk
	if err := wire.DecodeTopic(topic.SupportUpload, payload, &c); err != nil {
		s.log.Warn("support chunk dropped", "device", dev, "err", err)
		return true
	}
	if c.GetDeviceId() != dev {
		s.log.Warn("support chunk dropped: device_id does not match the topic", "device", dev, "claims", c.GetDeviceId())
		return true
	}
	ack := s.take(ctx, dev, &c)
	if ack == nil {
		return true // the store failed; the device sends the chunk again
	}
	// Sent apart: an MQTT handler must not wait for its own connection's
	// acknowledgement. An ack overtaken by a later one only makes the
	// device resend a chunk, which is answered again.
	s.sending.Add(1)
	go func() {
		defer s.sending.Done()
		s.ack(ctx, dev, ack)
	}()
	return true
}

// Close waits for the acks in flight.
func (s *Service) Close() { s.sending.Wait() }

// take checks and stores one chunk; it returns the ack to send, or nil
// when the store could not be reached (no ack: the device resends).
func (s *Service) take(ctx context.Context, dev string, c *pb.SupportChunk) *pb.SupportAck {
	ack := &pb.SupportAck{UploadId: c.GetUploadId(), DeviceId: dev}
	verify, took := false, false
	u, _, err := s.update(ctx, dev, c.GetUploadId(), func(u *store.SupportUpload) store.SupportEdit {
		ack.Next, ack.Done, ack.Error, verify = 0, false, "", false
		e := s.check(u, c, ack)
		took = e.Chunk != nil
		// Complete: verify, whether this chunk completed it or is the
		// last one again (another replica, or a crash, left it unverified).
		verify = u.State == StateUploading && u.Chunks > 0 && u.Next == u.Chunks && c.GetIndex() == u.Chunks-1
		return e
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		ack.Error = "no such upload was asked for"
		return ack
	case err != nil:
		s.log.Error("support chunk not stored", "device", dev, "upload", c.GetUploadId(), "err", err)
		return nil
	}
	if took {
		s.log.Debug("support chunk taken", "device", dev, "upload", u.ID, "index", c.GetIndex())
	}
	if verify {
		return s.finish(ctx, u, ack)
	}
	return ack
}

// check decides what one chunk does to its upload (under the upload's row
// lock) and fills in the ack.
func (s *Service) check(u *store.SupportUpload, c *pb.SupportChunk, ack *pb.SupportAck) store.SupportEdit {
	switch u.State {
	case StateReady:
		ack.Next, ack.Done = u.Chunks, true // a resent last chunk: the ack was lost
		return store.SupportEdit{}
	case StateUploading:
	default:
		ack.Error = "the upload failed: " + u.Error
		return store.SupportEdit{}
	}
	fail := func(why string) store.SupportEdit {
		ack.Error = why
		return s.fail(u, why)
	}
	sum := hex.EncodeToString(c.GetSha256())
	if u.Chunks == 0 {
		// The first chunk fixes the bundle's size, count and digest.
		if c.GetIndex() != 0 {
			ack.Next = 0
			return store.SupportEdit{}
		}
		if c.GetTotalSize() > uint64(s.cfg.MaxSize) {
			return fail(fmt.Sprintf("bundle of %d bytes is over the limit of %d", c.GetTotalSize(), s.cfg.MaxSize))
		}
		size, n, cs := int64(c.GetTotalSize()), c.GetCount(), int64(len(c.GetData()))
		if n > 1 && (cs == 0 || int64(n-1)*cs >= size || int64(n)*cs < size) {
			return fail(fmt.Sprintf("%d chunks of %d bytes cannot make %d bytes", n, cs, size))
		}
		u.Size, u.Chunks, u.SHA256, u.ChunkSize = size, n, sum, cs
	} else if c.GetCount() != u.Chunks || int64(c.GetTotalSize()) != u.Size || sum != u.SHA256 {
		return fail("chunk disagrees with the upload's first chunk (count, size or digest)")
	}
	if c.GetIndex() != u.Next {
		// Out of order, a duplicate, or the last chunk again while the
		// bundle is verified: ask for what comes next.
		ack.Next = u.Next
		return store.SupportEdit{}
	}
	want := u.ChunkSize
	if c.GetIndex() == u.Chunks-1 {
		want = u.Size - int64(u.Chunks-1)*u.ChunkSize
	}
	ch := sha256.Sum256(c.GetData())
	switch {
	case int64(len(c.GetData())) != want:
		return fail(fmt.Sprintf("chunk %d is %d bytes, not %d", c.GetIndex(), len(c.GetData()), want))
	case !bytes.Equal(ch[:], c.GetChunkSha256()):
		s.log.Warn("support chunk does not match its digest; asked again", "device", u.DeviceID, "upload", u.ID, "index", c.GetIndex())
		ack.Next = u.Next
		return store.SupportEdit{} // nothing saved: a first chunk's figures too
	}
	u.Next++
	u.Received = int64(c.GetIndex())*u.ChunkSize + int64(len(c.GetData()))
	u.UpdatedAt = s.now().UnixMilli()
	if u.Next == u.Chunks {
		u.Signature = c.GetSignature()
	}
	ack.Next = u.Next
	data := c.GetData()
	if data == nil {
		data = []byte{}
	}
	return store.SupportEdit{Save: true, Chunk: data, Index: c.GetIndex()}
}

// finish verifies a complete upload and keeps it, or fails it; it returns
// the ack to send. Two replicas may verify the same upload at once (a
// duplicated last chunk); the first to record its verdict wins.
func (s *Service) finish(ctx context.Context, u store.SupportUpload, ack *pb.SupportAck) *pb.SupportAck {
	why, how, sig, err := s.verify(ctx, u)
	if err != nil {
		// The store failed while reading the bundle back: not the
		// device's fault. It resends the last chunk and this runs again.
		s.log.Error("support bundle not verified", "device", u.DeviceID, "upload", u.ID, "err", err)
		ack.Next = u.Chunks
		return ack
	}
	readied := false
	got, _, err := s.update(ctx, u.DeviceID, u.ID, func(cur *store.SupportUpload) store.SupportEdit {
		readied = false
		if cur.State != StateUploading || cur.Next != cur.Chunks || cur.SHA256 != u.SHA256 {
			return store.SupportEdit{} // recorded meanwhile
		}
		if why != "" {
			return s.fail(cur, why)
		}
		cur.State, cur.Verified, cur.Signature, cur.UpdatedAt = StateReady, how, sig, s.now().UnixMilli()
		readied = true
		return store.SupportEdit{Save: true}
	})
	if err != nil {
		s.log.Error("support bundle verdict not stored", "device", u.DeviceID, "upload", u.ID, "err", err)
		ack.Next = u.Chunks
		return ack
	}
	switch got.State {
	case StateReady:
		ack.Next, ack.Done = got.Chunks, true
	case StateFailed:
		ack.Error = got.Error
	default:
		ack.Next = got.Next
	}
	if readied {
		s.log.Info("support bundle received", "device", got.DeviceID, "upload", got.ID, "bytes", got.Size, "verified", how)
		if _, err := s.st.PruneSupportUploads(ctx, got.DeviceID, s.cfg.Keep); err != nil {
			s.log.Warn("old support bundles not pruned", "device", got.DeviceID, "err", err)
		}
	}
	return ack
}

// verify reads a complete upload back from the store, a chunk at a time,
// and checks its size, digest and signature. It returns why the bundle is
// refused ("" if it is not), how the signature was checked and the
// signature to keep; err is the store's failure.
func (s *Service) verify(ctx context.Context, u store.SupportUpload) (why, how string, sig []byte, err error) {
	h := sha256.New()
	var n int64
	for i := range u.Chunks {
		b, err := s.st.SupportChunk(ctx, u.DeviceID, u.ID, i)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Sprintf("chunk %d is missing", i), "", nil, nil
		}
		if err != nil {
			return "", "", nil, err
		}
		n += int64(len(b))
		if n > u.Size {
			break
		}
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if n != u.Size || hex.EncodeToString(sum[:]) != u.SHA256 {
		return "the reassembled bundle does not match its size and digest", "", nil, nil
	}
	if len(u.Signature) == 0 {
		return "the last chunk carries no signature", "", nil, nil
	}
	parsed, err := supportsig.Parse(u.Signature)
	if err != nil {
		return err.Error(), "", nil, nil
	}
	if parsed.DeviceID != u.DeviceID {
		return fmt.Sprintf("the signature names device %q", parsed.DeviceID), "", nil, nil
	}
	pub, err := s.cfg.DeviceKey(ctx, u.DeviceID)
	if err != nil {
		return "device key: " + err.Error(), "", nil, nil
	}
	trust := supportsig.Trust{PublicKey: pub}
	if parsed.CertificatePEM != "" && s.cfg.Roots != nil {
		trust.Roots = s.cfg.Roots
	}
	v, err := supportsig.VerifyDigest(sum, parsed, trust)
	if err != nil {
		return err.Error(), "", nil, nil
	}
	sb, _ := json.MarshalIndent(parsed, "", "  ")
	return "", v.How, append(sb, '\n'), nil
}

func (s *Service) ack(ctx context.Context, dev string, a *pb.SupportAck) {
	if s.cfg.Publisher == nil {
		return
	}
	b, err := wire.Encode(a)
	if err != nil {
		return
	}
	e := topic.MustLookup(topic.SupportAck)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.cfg.Publisher.Publish(ctx, s.cfg.Scheme.Device(topic.SupportAck, dev), e.QoS, e.Retained, b); err != nil {
		s.log.Warn("support ack not sent", "device", dev, "err", err)
	}
}

// Expire fails uploads idle longer than Idle; the server calls it now and
// then. Any replica may: each upload is failed once.
func (s *Service) Expire() int {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cutoff := s.now().Add(-s.cfg.Idle).UnixMilli()
	stale, err := s.st.StaleSupportUploads(ctx, StateUploading, cutoff, 0)
	if err != nil {
		s.log.Warn("idle support uploads not read", "err", err)
		return 0
	}
	n := 0
	for _, old := range stale {
		_, saved, err := s.update(ctx, old.DeviceID, old.ID, func(u *store.SupportUpload) store.SupportEdit {
			if u.State != StateUploading || u.UpdatedAt >= cutoff {
				return store.SupportEdit{}
			}
			return s.fail(u, "no chunk for "+s.cfg.Idle.String())
		})
		if err == nil && saved {
			n++
		}
	}
	return n
}

// List returns a device's uploads, newest first.
func (s *Service) List(deviceID string) ([]Info, error) {
	if topic.ValidID(deviceID) != nil {
		return nil, fmt.Errorf("%w: device ID", ErrInvalid)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	us, err := s.st.SupportUploads(ctx, deviceID)
	if err != nil {
		return nil, err
	}
	out := make([]Info, 0, len(us))
	for _, u := range us {
		out = append(out, infoOf(u))
	}
	return out, nil
}

// Get returns one upload.
func (s *Service) Get(deviceID, id string) (Info, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	u, err := s.get(ctx, deviceID, id)
	return infoOf(u), err
}

func (s *Service) get(ctx context.Context, dev, id string) (store.SupportUpload, error) {
	if topic.ValidID(dev) != nil || topic.ValidID(id) != nil {
		return store.SupportUpload{DeviceID: dev, ID: id}, ErrNotFound
	}
	u, err := s.st.SupportUpload(ctx, dev, id)
	if errors.Is(err, store.ErrNotFound) {
		return u, fmt.Errorf("%w: %s/%s", ErrNotFound, dev, id)
	}
	return u, err
}

// Wait returns an upload once it is ready or failed, or when ctx ends
// (with its state then). It reads the state again on every change this
// process makes and every Poll, for changes other replicas make.
func (s *Service) Wait(ctx context.Context, deviceID, id string) (Info, error) {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		s.mu.Lock()
		ch := s.changed
		s.mu.Unlock()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opTimeout)
		u, err := s.get(rctx, deviceID, id)
		cancel()
		in := infoOf(u)
		if err != nil || in.State != StateUploading {
			return in, err
		}
		select {
		case <-ctx.Done():
			return in, ctx.Err()
		case <-ch:
		case <-t.C:
		}
	}
}
