// Package supportbundle receives the support bundles devices upload when
// an operator asks for one (flotctl devices support-bundle): it expects an
// upload the command announced, takes its chunks in order from the
// device's own support-upload topic, acknowledges each on support-ack,
// checks every size and digest, reassembles the bundle in its folder,
// verifies the device's signature against the device's enrolled key (and
// the fleet CA, when the signature carries a certificate), and keeps the
// newest bundles of each device for the operator to download.
//
// Everything a device sends is hostile until checked: a chunk for an
// upload nobody asked for, from another device, out of order, of the
// wrong size or digest, or a bundle over the size limit changes nothing on
// disk but what the upload itself owns, and an upload that fails is
// removed. Names on disk are the device and upload IDs, both restricted to
// [a-z0-9._-] (topic.ValidID), so no name can leave the folder.
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
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

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
)

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

// Config sets up a Service.
type Config struct {
	Dir       string // where bundles are kept (DataDir/support)
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
	Now     func() time.Time
	Logger  *slog.Logger
}

// Info describes one upload; it is kept beside the bundle as ID.json.
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

// Service is the control plane's support-bundle receiver.
type Service struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	uploads map[string]*Info // device/upload → uploading
	changed chan struct{}    // closed and replaced on every state change
	sending sync.WaitGroup   // acks in flight
}

// New opens the folder and takes back the uploads a previous process left
// in progress, so devices resume them.
func New(cfg Config) (*Service, error) {
	if cfg.Dir == "" || cfg.DeviceKey == nil {
		return nil, errors.New("supportbundle: Dir and DeviceKey are required")
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
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("supportbundle: %w", err)
	}
	s := &Service{cfg: cfg, log: cfg.Logger, uploads: map[string]*Info{}, changed: make(chan struct{})}
	devs, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("supportbundle: %w", err)
	}
	for _, d := range devs {
		if !d.IsDir() || topic.ValidID(d.Name()) != nil {
			continue
		}
		infos, _ := s.list(d.Name())
		for _, in := range infos {
			if in.State == StateUploading {
				s.uploads[key(in.DeviceID, in.ID)] = &in
			}
		}
	}
	return s, nil
}

func key(dev, id string) string { return dev + "/" + id }

// MaxSize is the largest bundle accepted.
func (s *Service) MaxSize() int64 { return s.cfg.MaxSize }

// Expect records an upload the control plane is about to ask device for
// and returns its ID.
func (s *Service) Expect(deviceID, actor string) (Info, error) {
	if err := topic.ValidID(deviceID); err != nil {
		return Info{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	now := s.cfg.Now().UTC()
	in := Info{ID: now.Format("20060102t150405z") + "-" + hex.EncodeToString(b), DeviceID: deviceID, State: StateUploading,
		RequestedBy: actor, RequestedAt: now, UpdatedAt: now}
	if err := os.MkdirAll(s.devDir(deviceID), 0o700); err != nil {
		return Info{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.save(&in); err != nil {
		return Info{}, err
	}
	s.uploads[key(deviceID, in.ID)] = &in
	return in, nil
}

// Fail ends an expected upload (the device refused or never answered).
func (s *Service) Fail(deviceID, id, why string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in := s.uploads[key(deviceID, id)]; in != nil {
		s.fail(in, why)
	}
}

func (s *Service) devDir(dev string) string { return filepath.Join(s.cfg.Dir, dev) }

func (s *Service) path(dev, id, ext string) string { return filepath.Join(s.devDir(dev), id+ext) }

// save writes an upload's Info (under mu).
func (s *Service) save(in *Info) error {
	b, err := json.MarshalIndent(in, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.path(in.DeviceID, in.ID, ".json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, s.path(in.DeviceID, in.ID, ".json")); err != nil {
		return err
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

// fail marks an upload failed and removes its partial data (under mu).
func (s *Service) fail(in *Info, why string) {
	in.State, in.Error, in.UpdatedAt = StateFailed, why, s.cfg.Now().UTC()
	delete(s.uploads, key(in.DeviceID, in.ID))
	_ = os.Remove(s.path(in.DeviceID, in.ID, ".part"))
	if err := s.save(in); err != nil {
		s.log.Warn("support bundle state not saved", "device", in.DeviceID, "upload", in.ID, "err", err)
	}
	s.log.Warn("support bundle upload failed", "device", in.DeviceID, "upload", in.ID, "why", why)
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

// take checks and stores one chunk; it returns the ack to send.
func (s *Service) take(ctx context.Context, dev string, c *pb.SupportChunk) *pb.SupportAck {
	s.mu.Lock()
	defer s.mu.Unlock()
	ack := &pb.SupportAck{UploadId: c.GetUploadId(), DeviceId: dev}
	in := s.uploads[key(dev, c.GetUploadId())]
	if in == nil {
		if old, err := s.read(dev, c.GetUploadId()); err == nil && old.State == StateReady {
			ack.Next, ack.Done = old.Chunks, true // a resent last chunk: the ack was lost
			return ack
		}
		ack.Error = "no such upload was asked for"
		return ack
	}
	fail := func(why string) *pb.SupportAck {
		s.fail(in, why)
		ack.Error = why
		return ack
	}
	sum := hex.EncodeToString(c.GetSha256())
	if in.Chunks == 0 {
		// The first chunk fixes the bundle's size, count and digest.
		if c.GetIndex() != 0 {
			ack.Next = 0
			return ack
		}
		if c.GetTotalSize() > uint64(s.cfg.MaxSize) {
			return fail(fmt.Sprintf("bundle of %d bytes is over the limit of %d", c.GetTotalSize(), s.cfg.MaxSize))
		}
		in.Size, in.Chunks, in.SHA256, in.ChunkSize = int64(c.GetTotalSize()), c.GetCount(), sum, int64(len(c.GetData()))
		if in.Chunks > 1 && (in.ChunkSize == 0 || int64(in.Chunks-1)*in.ChunkSize >= in.Size || int64(in.Chunks)*in.ChunkSize < in.Size) {
			return fail(fmt.Sprintf("%d chunks of %d bytes cannot make %d bytes", in.Chunks, in.ChunkSize, in.Size))
		}
	} else if c.GetCount() != in.Chunks || int64(c.GetTotalSize()) != in.Size || sum != in.SHA256 {
		return fail("chunk disagrees with the upload's first chunk (count, size or digest)")
	}
	if c.GetIndex() != in.Next {
		ack.Next = in.Next // out of order or a duplicate: ask for what comes next
		return ack
	}
	want := in.ChunkSize
	if c.GetIndex() == in.Chunks-1 {
		want = in.Size - int64(in.Chunks-1)*in.ChunkSize
	}
	ch := sha256.Sum256(c.GetData())
	switch {
	case int64(len(c.GetData())) != want:
		return fail(fmt.Sprintf("chunk %d is %d bytes, not %d", c.GetIndex(), len(c.GetData()), want))
	case !bytes.Equal(ch[:], c.GetChunkSha256()):
		s.log.Warn("support chunk does not match its digest; asked again", "device", dev, "upload", in.ID, "index", c.GetIndex())
		ack.Next = in.Next
		return ack
	}
	off := int64(c.GetIndex()) * in.ChunkSize
	if err := writeAt(s.path(dev, in.ID, ".part"), off, c.GetData()); err != nil {
		s.log.Error("support chunk not stored", "device", dev, "upload", in.ID, "err", err)
		ack.Next = in.Next
		return ack
	}
	in.Next++
	in.Received = off + int64(len(c.GetData()))
	in.UpdatedAt = s.cfg.Now().UTC()
	if in.Next < in.Chunks {
		if err := s.save(in); err != nil {
			s.log.Warn("support bundle state not saved", "err", err)
		}
		ack.Next = in.Next
		return ack
	}
	if why := s.finish(ctx, in, c.GetSignature()); why != "" {
		return fail(why)
	}
	ack.Next, ack.Done = in.Next, true
	return ack
}

// writeAt writes data at off, cutting what a crashed write left after it.
func writeAt(path string, off int64, data []byte) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Truncate(off); err != nil {
		f.Close()
		return err
	}
	if _, err := f.WriteAt(data, off); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// finish verifies a complete upload and keeps it (under mu); it returns
// why it was refused, or "".
func (s *Service) finish(ctx context.Context, in *Info, sigJSON []byte) string {
	part := s.path(in.DeviceID, in.ID, ".part")
	b, err := os.ReadFile(part)
	if err != nil {
		return "reading the bundle back: " + err.Error()
	}
	sum := sha256.Sum256(b)
	if int64(len(b)) != in.Size || hex.EncodeToString(sum[:]) != in.SHA256 {
		return "the reassembled bundle does not match its size and digest"
	}
	if len(sigJSON) == 0 {
		return "the last chunk carries no signature"
	}
	sig, err := supportsig.Parse(sigJSON)
	if err != nil {
		return err.Error()
	}
	if sig.DeviceID != in.DeviceID {
		return fmt.Sprintf("the signature names device %q", sig.DeviceID)
	}
	pub, err := s.cfg.DeviceKey(ctx, in.DeviceID)
	if err != nil {
		return "device key: " + err.Error()
	}
	trust := supportsig.Trust{PublicKey: pub}
	if sig.CertificatePEM != "" && s.cfg.Roots != nil {
		trust.Roots = s.cfg.Roots
	}
	v, err := supportsig.Verify(b, sig, trust)
	if err != nil {
		return err.Error()
	}
	sb, _ := json.MarshalIndent(sig, "", "  ")
	if err := os.WriteFile(s.path(in.DeviceID, in.ID, ".tar.gz.sig"), append(sb, '\n'), 0o600); err != nil {
		return err.Error()
	}
	if err := os.Rename(part, s.path(in.DeviceID, in.ID, ".tar.gz")); err != nil {
		return err.Error()
	}
	in.State, in.Verified, in.UpdatedAt = StateReady, v.How, s.cfg.Now().UTC()
	delete(s.uploads, key(in.DeviceID, in.ID))
	if err := s.save(in); err != nil {
		s.log.Warn("support bundle state not saved", "err", err)
	}
	s.log.Info("support bundle received", "device", in.DeviceID, "upload", in.ID, "bytes", in.Size, "verified", v.How)
	s.prune(in.DeviceID)
	return ""
}

// prune keeps the newest Keep finished bundles of a device (under mu).
func (s *Service) prune(dev string) {
	infos, err := s.list(dev)
	if err != nil {
		return
	}
	kept := 0
	for _, in := range infos { // newest first
		if in.State == StateUploading {
			continue
		}
		if kept++; kept <= s.cfg.Keep {
			continue
		}
		for _, ext := range []string{".tar.gz", ".tar.gz.sig", ".part", ".json"} {
			_ = os.Remove(s.path(dev, in.ID, ext))
		}
	}
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
// then.
func (s *Service) Expire() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, in := range s.uploads {
		if s.cfg.Now().Sub(in.UpdatedAt) > s.cfg.Idle {
			s.fail(in, "no chunk for "+s.cfg.Idle.String())
			n++
		}
	}
	return n
}

// maxInfo caps an Info file read back.
const maxInfo = 64 << 10

func (s *Service) read(dev, id string) (Info, error) {
	var in Info
	if topic.ValidID(dev) != nil || topic.ValidID(id) != nil {
		return in, ErrNotFound
	}
	f, err := os.Open(s.path(dev, id, ".json"))
	if err != nil {
		return in, ErrNotFound
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxInfo))
	if err != nil {
		return in, err
	}
	if err := json.Unmarshal(b, &in); err != nil || in.ID != id || in.DeviceID != dev {
		return in, fmt.Errorf("support bundle %s/%s: damaged record", dev, id)
	}
	return in, nil
}

func (s *Service) list(dev string) ([]Info, error) {
	if topic.ValidID(dev) != nil {
		return nil, fmt.Errorf("%w: device ID", ErrInvalid)
	}
	es, err := os.ReadDir(s.devDir(dev))
	if errors.Is(err, os.ErrNotExist) {
		return []Info{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []Info{}
	for _, e := range es {
		id, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() {
			continue
		}
		if in, err := s.read(dev, id); err == nil {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RequestedAt.After(out[j].RequestedAt) })
	return out, nil
}

// List returns a device's uploads, newest first.
func (s *Service) List(deviceID string) ([]Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.list(deviceID)
}

// Get returns one upload.
func (s *Service) Get(deviceID, id string) (Info, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read(deviceID, id)
}

// Open opens a ready bundle (and returns its signature file's bytes).
func (s *Service) Open(deviceID, id string) (*os.File, Info, []byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, err := s.read(deviceID, id)
	if err != nil {
		return nil, in, nil, err
	}
	if in.State != StateReady {
		return nil, in, nil, fmt.Errorf("%w: %s", ErrNotReady, in.State)
	}
	sig, err := os.ReadFile(s.path(deviceID, id, ".tar.gz.sig"))
	if err != nil {
		return nil, in, nil, err
	}
	f, err := os.Open(s.path(deviceID, id, ".tar.gz"))
	return f, in, sig, err
}

// Wait returns an upload once it is ready or failed, or when ctx ends
// (with its state then).
func (s *Service) Wait(ctx context.Context, deviceID, id string) (Info, error) {
	for {
		s.mu.Lock()
		in, err := s.read(deviceID, id)
		ch := s.changed
		s.mu.Unlock()
		if err != nil || in.State != StateUploading {
			return in, err
		}
		select {
		case <-ctx.Done():
			return in, ctx.Err()
		case <-ch:
		}
	}
}
