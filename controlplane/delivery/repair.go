package delivery

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// Reasons a chunk request is refused; each is counted in RepairStats.
var (
	ErrMalformed     = errors.New("malformed chunk request")
	ErrForeignDevice = errors.New("chunk request names another device than its topic")
	ErrUnknownBundle = errors.New("chunk request for a bundle not in the store")
	ErrNotOffered    = errors.New("bundle not offered to this device")
	ErrOutOfRange    = errors.New("chunk request outside the manifest")
	ErrTooLarge      = errors.New("chunk request over the per-request cap")
	ErrRateLimited   = errors.New("device over its repair rate")
	ErrBusy          = errors.New("repair queue full")
)

// Defaults of RepairOptions.
const (
	DefaultMaxRequestBytes = 8 << 20
	DefaultDeviceRate      = 8 << 20
	DefaultRepairRate      = 32 << 20
	DefaultRepairQueue     = 1024
	manifestCache          = 32
)

// RepairOptions bound what repair costs the control plane.
type RepairOptions struct {
	Scheme topic.Scheme // zero value: topic.Default()
	// MaxRequestBytes caps the chunk bytes one request may ask for.
	MaxRequestBytes int64
	// DeviceRate is each device's budget in chunk bytes per second (with a
	// burst of two requests); Rate paces all repair traffic together. A
	// negative Rate is unpaced.
	DeviceRate, Rate int64
	// Queue is how many accepted requests may wait to be served.
	Queue int
	// Offered, if set, says whether a device may fetch a bundle (e.g. it
	// is in the device's desired state); nil offers every stored bundle.
	Offered func(deviceID, digest string) bool
}

// RepairStats counts requests and what answering them cost.
type RepairStats struct {
	Requests uint64           // received
	Served   uint64           // answered in full
	Chunks   uint64           // chunks published
	Bytes    uint64           // MQTT payload bytes published
	Refused  map[error]uint64 // by reason (the Err* values)
}

// DeviceProgress is what the control plane knows of one device's fetch of
// one bundle from its repair requests.
type DeviceProgress struct {
	Device, Bundle string
	Requests       int
	ChunksServed   int
	BytesServed    int64
	LastAsked      int64 // chunk bytes the latest request asked for
	LastRequest    time.Time
}

// Repairer answers ChunkRequests: Handle checks and queues each, Run
// publishes the chunks on the device's own topic.
type Repairer struct {
	src  Source
	pub  Publisher
	o    RepairOptions
	pace *pacer
	// queue holds device IDs whose request waits in pending: a device has
	// at most one request waiting, its latest, which replaces an older one
	// (a device re-asks for what it still lacks).
	queue chan string

	mu        sync.Mutex
	devices   map[string]*pacer
	progress  map[string]map[string]*DeviceProgress
	manifests map[string]*pb.BundleManifest
	pending   map[string]job
	stats     RepairStats
}

type job struct {
	device, digest string
	m              *pb.BundleManifest
	ranges         []*pb.ChunkRange
}

// NewRepairer returns a Repairer serving chunks from src through pub.
func NewRepairer(src Source, pub Publisher, o RepairOptions) *Repairer {
	if o.Scheme == (topic.Scheme{}) {
		o.Scheme = topic.Default()
	}
	if o.MaxRequestBytes <= 0 {
		o.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if o.DeviceRate <= 0 {
		o.DeviceRate = DefaultDeviceRate
	}
	if o.Rate == 0 {
		o.Rate = DefaultRepairRate
	}
	if o.Queue <= 0 {
		o.Queue = DefaultRepairQueue
	}
	return &Repairer{src: src, pub: pub, o: o, pace: newPacer(o.Rate, DefaultBurst),
		queue: make(chan string, o.Queue), pending: map[string]job{}, devices: map[string]*pacer{},
		progress: map[string]map[string]*DeviceProgress{}, manifests: map[string]*pb.BundleManifest{},
		stats: RepairStats{Refused: map[error]uint64{}}}
}

// Filter is the subscription that brings every device's chunk requests;
// give each message on it to Handle.
func (r *Repairer) Filter() string { return r.o.Scheme.AllDevices(topic.ChunkRequest) }

// Handle checks one message from Filter and queues it for Run. It never
// blocks; a refused request returns an error wrapping one of the Err*
// reasons, and is counted.
func (r *Repairer) Handle(topicName string, payload []byte) error {
	r.mu.Lock()
	r.stats.Requests++
	r.mu.Unlock()
	j, cost, err := r.check(topicName, payload)
	if err == nil && !r.devicePacer(j.device).allow(int(min(cost, 1<<40))) {
		err = fmt.Errorf("%w: %s asked for %d bytes", ErrRateLimited, j.device, cost)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		_, queued := r.pending[j.device]
		r.pending[j.device] = j
		if !queued {
			select {
			case r.queue <- j.device:
			default:
				delete(r.pending, j.device)
				err = ErrBusy
			}
		}
	}
	if err != nil {
		for _, reason := range []error{ErrMalformed, ErrForeignDevice, ErrUnknownBundle, ErrNotOffered,
			ErrOutOfRange, ErrTooLarge, ErrRateLimited, ErrBusy} {
			if errors.Is(err, reason) {
				r.stats.Refused[reason]++
			}
		}
		return fmt.Errorf("chunk request on %s: %w", topicName, err)
	}
	p := r.progressOf(j.device, j.digest)
	p.Requests++
	p.LastAsked = cost
	p.LastRequest = time.Now()
	return nil
}

// check decodes and validates a request, returning the job and the chunk
// bytes it asks for.
func (r *Repairer) check(topicName string, payload []byte) (job, int64, error) {
	k, device, ok := r.o.Scheme.Parse(topicName)
	if !ok || k != topic.ChunkRequest {
		return job{}, 0, fmt.Errorf("%w: not a chunk-request topic", ErrMalformed)
	}
	var req pb.ChunkRequest
	if err := wire.DecodeTopic(topic.ChunkRequest, payload, &req); err != nil {
		return job{}, 0, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if req.GetDeviceId() != device {
		return job{}, 0, fmt.Errorf("%w: %q on %s's topic", ErrForeignDevice, req.GetDeviceId(), device)
	}
	digest := req.GetBundleDigest()
	if r.o.Offered != nil && !r.o.Offered(device, digest) {
		return job{}, 0, fmt.Errorf("%w: %s", ErrNotOffered, digest)
	}
	m, err := r.manifest(digest)
	if err != nil {
		return job{}, 0, err
	}
	var cost int64
	files := m.GetFiles()
	for _, rg := range req.GetRanges() {
		if int(rg.GetFileIndex()) >= len(files) {
			return job{}, 0, fmt.Errorf("%w: file %d of %d", ErrOutOfRange, rg.GetFileIndex(), len(files))
		}
		chunks := files[rg.GetFileIndex()].GetChunks()
		if end := uint64(rg.GetFirst()) + uint64(rg.GetCount()); end > uint64(len(chunks)) {
			return job{}, 0, fmt.Errorf("%w: chunks %d to %d of file %d, which has %d",
				ErrOutOfRange, rg.GetFirst(), end, rg.GetFileIndex(), len(chunks))
		}
		for _, c := range chunks[rg.GetFirst() : rg.GetFirst()+rg.GetCount()] {
			cost += int64(c.GetLength())
		}
		if cost > r.o.MaxRequestBytes {
			return job{}, 0, fmt.Errorf("%w: over %d bytes", ErrTooLarge, r.o.MaxRequestBytes)
		}
	}
	return job{device: device, digest: digest, m: m, ranges: req.GetRanges()}, cost, nil
}

func (r *Repairer) manifest(digest string) (*pb.BundleManifest, error) {
	r.mu.Lock()
	m, ok := r.manifests[digest]
	r.mu.Unlock()
	if ok {
		return m, nil
	}
	_, m, err := r.src.Manifest(digest)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnknownBundle, err)
	}
	r.mu.Lock()
	if len(r.manifests) >= manifestCache {
		clear(r.manifests)
	}
	r.manifests[digest] = m
	r.mu.Unlock()
	return m, nil
}

func (r *Repairer) devicePacer(device string) *pacer {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, ok := r.devices[device]
	if !ok {
		p = newPacer(r.o.DeviceRate, 2*r.o.MaxRequestBytes)
		r.devices[device] = p
	}
	return p
}

// progressOf returns the record of device's fetch of digest; r.mu is held.
func (r *Repairer) progressOf(device, digest string) *DeviceProgress {
	byBundle, ok := r.progress[device]
	if !ok {
		byBundle = map[string]*DeviceProgress{}
		r.progress[device] = byBundle
	}
	p, ok := byBundle[digest]
	if !ok {
		p = &DeviceProgress{Device: device, Bundle: digest}
		byBundle[digest] = p
	}
	return p
}

// Run serves queued requests until ctx ends.
func (r *Repairer) Run(ctx context.Context) error {
	for {
		select {
		case device := <-r.queue:
			r.mu.Lock()
			j := r.pending[device]
			delete(r.pending, device)
			r.mu.Unlock()
			if err := r.serve(ctx, j); err != nil && ctx.Err() != nil {
				return ctx.Err()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// serve publishes a request's chunks on the device's repair topic. It
// stops early when the device has sent a newer request, which is served
// in its turn instead.
func (r *Repairer) serve(ctx context.Context, j job) error {
	to := r.o.Scheme.Device(topic.ChunkRepair, j.device)
	for _, rg := range j.ranges {
		for i := rg.GetFirst(); i < rg.GetFirst()+rg.GetCount(); i++ {
			r.mu.Lock()
			_, newer := r.pending[j.device]
			r.mu.Unlock()
			if newer {
				return nil
			}
			c := j.m.GetFiles()[rg.GetFileIndex()].GetChunks()[i]
			payload, err := encodeChunk(r.src, j.digest, chunkRef{file: rg.GetFileIndex(), chunk: i, sum: [32]byte(c.GetSha256())})
			if err != nil {
				return fmt.Errorf("repair %s: %w", j.device, err)
			}
			if err := r.pace.take(ctx, len(payload)); err != nil {
				return err
			}
			if err := r.pub.Publish(ctx, to, 0, false, payload); err != nil {
				return fmt.Errorf("repair %s: %w", j.device, err)
			}
			r.mu.Lock()
			r.stats.Chunks++
			r.stats.Bytes += uint64(len(payload))
			p := r.progressOf(j.device, j.digest)
			p.ChunksServed++
			p.BytesServed += int64(len(payload))
			r.mu.Unlock()
		}
	}
	r.mu.Lock()
	r.stats.Served++
	r.mu.Unlock()
	return nil
}

// Stats returns the counters so far.
func (r *Repairer) Stats() RepairStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.stats
	s.Refused = make(map[error]uint64, len(r.stats.Refused))
	for k, v := range r.stats.Refused {
		s.Refused[k] = v
	}
	return s
}

// Progress returns what is known of device's fetches, one per bundle.
func (r *Repairer) Progress(device string) []DeviceProgress {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []DeviceProgress
	for _, p := range r.progress[device] {
		out = append(out, *p)
	}
	return out
}
