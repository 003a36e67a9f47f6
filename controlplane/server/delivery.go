package server

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/broker"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/delivery"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/topic"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// Defaults of the delivery settings in Config.
const (
	DefaultWaveDelay      = 3 * time.Second
	DefaultReleaseRefresh = time.Minute
)

// deliveryService is the server's api.Bundles: the release repository,
// the bundle store, per-device assignments (signed by the director into
// desired states), waves and repairs, and the devices' fetch progress.
type deliveryService struct {
	s        *Server
	trust    *trustRepos
	store    bundleStore
	repairer *delivery.Repairer
	assigned *assignments
	progress *progressBook

	published atomic.Int64 // the release metadata's generation last published

	wavesMu    sync.Mutex
	waves      map[string]bool // digests with a wave scheduled or running
	waveChunks atomic.Uint64   // chunks published by waves
}

// ChunksSent says how many chunks the control plane published: in waves
// (once per wave, fanned out by the broker) and as repairs (per device).
func (s *Server) ChunksSent() (wave, repair uint64) {
	return s.delivery.waveChunks.Load(), s.delivery.repairer.Stats().Chunks
}

var _ api.Bundles = (*deliveryService)(nil)

func (s *Server) openDelivery() error {
	dir := filepath.Join(s.cfg.DataDir, "release")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t, err := openTrust(ctx, dir, s.cfg.ReleaseOnlineKey, s.cfg.Now, s.cfg.ReleaseExpiry, s.store)
	if err != nil {
		return err
	}
	bs, err := s.openBundles()
	if err != nil {
		return err
	}
	a, err := openAssignments(context.Background(), s.store, filepath.Join(dir, "assignments.json"), s.log)
	if err != nil {
		return err
	}
	d := &deliveryService{s: s, trust: t, store: bs, assigned: a, progress: newProgressBook(), waves: map[string]bool{}}
	if err := d.progress.load(context.Background(), s.store); err != nil {
		return err
	}
	d.repairer = delivery.NewRepairer(bs, s.mqtt, delivery.RepairOptions{Scheme: s.scheme, Offered: a.offered})
	s.delivery = d
	return nil
}

// start runs the repairer and the metadata refresher, and restores the
// retained release metadata and manifests (the embedded broker forgets
// them at restart).
func (d *deliveryService) start() {
	s := d.s
	s.bg.Add(3)
	go func() {
		defer s.bg.Done()
		_ = d.repairer.Run(s.life)
	}()
	go func() {
		defer s.bg.Done()
		d.persistReports(s.life)
	}()
	go func() {
		defer s.bg.Done()
		d.publishRelease(s.life)
		dgs, err := d.assigned.digests(s.life)
		if err != nil {
			s.log.Warn("assigned bundles' manifests not restored", "err", err)
		}
		for _, dg := range dgs {
			d.publishManifest(s.life, dg)
		}
		t := time.NewTicker(s.cfg.ReleaseRefresh)
		defer t.Stop()
		for {
			select {
			case <-s.life.Done():
				return
			case <-t.C:
				d.refresh(s.life)
			}
		}
	}()
}

// refresh re-signs the release timestamp and the devices' director
// metadata before they expire, on the rollout scheduler's leader only
// (its lease fences the metadata's write); the other replicas read the
// release metadata again, to serve what the leader signed.
func (d *deliveryService) refresh(ctx context.Context) {
	epoch := d.s.rollouts.leading.Load()
	if epoch == 0 {
		if _, err := d.trust.sync(ctx); err != nil {
			d.s.log.Warn("release metadata not read", "err", err)
		}
		return
	}
	if _, err := d.trust.Refresh(ctx, schedulerLease, epoch); err != nil {
		d.s.log.Warn("release metadata not refreshed", "err", err)
	}
	// The leader publishes whatever generation it has not published yet,
	// its own or one another replica pushed (whose publication may have
	// raced an older one).
	if gen := d.trust.Generation(); gen != d.published.Load() {
		d.publishRelease(ctx)
	}
	d.collectChunks(ctx)
	stale, err := d.assigned.stale(ctx, d.s.cfg.Now(), d.s.cfg.DirectorRenew)
	if err != nil {
		d.s.log.Warn("stale director metadata not found", "err", err)
	}
	for _, dev := range stale {
		d.s.registry.PublishDesired(ctx, dev)
	}
}

func (d *deliveryService) publishRelease(ctx context.Context) {
	gen := d.trust.Generation()
	md := d.trust.Metadata()
	if md == nil {
		return
	}
	b, err := wire.Encode(&pb.ReleaseMetadata{Metadata: md})
	if err == nil {
		e := topic.MustLookup(topic.ReleaseMeta)
		err = d.s.mqtt.Publish(ctx, d.s.scheme.Fleet(topic.ReleaseMeta), e.QoS, e.Retained, b)
	}
	if err != nil {
		d.s.log.Warn("release metadata not published", "err", err)
		return
	}
	d.published.Store(gen)
}

func (d *deliveryService) publishManifest(ctx context.Context, digest string) {
	raw, _, err := d.store.Manifest(digest)
	if err == nil {
		e := topic.MustLookup(topic.Manifest)
		err = d.s.mqtt.Publish(ctx, d.s.scheme.Bundle(topic.Manifest, digest), e.QoS, e.Retained, raw)
	}
	if err != nil {
		d.s.log.Warn("manifest not published", "bundle", digest, "err", err)
	}
}

// PushRelease implements api.Bundles.
func (d *deliveryService) PushRelease(ctx context.Context, actor string, files map[string][]byte) (api.ReleaseView, error) {
	repo, err := d.trust.Push(ctx, files)
	if err != nil {
		return api.ReleaseView{}, err
	}
	d.publishRelease(ctx)
	v := releaseView(repo, d.uploaded)
	d.audit(ctx, actor, "release.push", "release", fmt.Sprintf("root v%d targets v%d (%d targets)", v.RootVersion, v.TargetsVersion, len(v.Targets)))
	return v, nil
}

func (d *deliveryService) uploaded(digest string) bool {
	_, _, err := d.store.Manifest(digest)
	return err == nil
}

// PutChunk implements api.Bundles.
func (d *deliveryService) PutChunk(_ context.Context, sum [32]byte, data []byte) error {
	if err := d.store.PutChunk(sum, data); err != nil {
		if errors.Is(err, bundle.ErrMismatch) {
			return fmt.Errorf("%w: %w", registry.ErrInvalid, err)
		}
		return err
	}
	return nil
}

// maxDeliverableManifest is the largest manifest the embedded broker
// carries in one packet, with room for the topic and headers.
const maxDeliverableManifest = broker.DefaultMaxPacketSize - 4<<10

// PushBundle implements api.Bundles: the manifest must be a released
// target, every chunk uploaded.
func (d *deliveryService) PushBundle(ctx context.Context, actor string, raw []byte) (api.BundleView, error) {
	var m pb.BundleManifest
	if err := wire.DecodeTopic(topic.Manifest, raw, &m); err != nil {
		return api.BundleView{}, fmt.Errorf("%w: manifest: %w", registry.ErrInvalid, err)
	}
	if d.s.broker != nil && len(raw) > maxDeliverableManifest {
		return api.BundleView{}, fmt.Errorf("%w: manifest is %d bytes; the embedded broker carries at most %d", registry.ErrInvalid, len(raw), maxDeliverableManifest)
	}
	digest := bundle.Digest(raw)
	tf, err := d.released(digest, int64(len(raw)))
	if err != nil {
		return api.BundleView{}, err
	}
	var missing []string
	v := api.BundleView{Digest: digest, Name: m.GetName(), Release: m.GetRelease(), Version: m.GetVersion(), Target: tf.Path, Files: len(m.GetFiles())}
	seen := map[[32]byte]bool{}
	for _, f := range m.GetFiles() {
		v.Bytes += f.GetSize()
		for _, c := range f.GetChunks() {
			v.Chunks++
			sum := [32]byte(c.GetSha256())
			if !seen[sum] && !d.store.HasChunk(sum) {
				missing = append(missing, hex.EncodeToString(sum[:]))
			}
			seen[sum] = true
		}
	}
	if len(missing) > 0 {
		return api.BundleView{}, &api.MissingChunksError{Missing: missing}
	}
	if _, err := d.store.PutManifest(raw); err != nil {
		return api.BundleView{}, err
	}
	d.audit(ctx, actor, "bundle.push", digest, fmt.Sprintf("%s release %d (%s)", m.GetName(), m.GetRelease(), tf.Path))
	return v, nil
}

// released finds the release target whose hash is digest.
func (d *deliveryService) released(digest string, length int64) (*metadata.TargetFiles, error) {
	targets, err := d.trust.Targets()
	if err != nil {
		return nil, err
	}
	for _, tf := range targets {
		if targetDigest(tf) == digest && tf.Length == length {
			return tf, nil
		}
	}
	return nil, fmt.Errorf("%w: manifest %s is not a released target: release it with flotctl release add, then flotctl release push", registry.ErrConflict, digest[:16])
}

// Assign implements api.Bundles.
func (d *deliveryService) Assign(ctx context.Context, actor, device, model string, rel uint64) (api.AssignmentView, error) {
	dev, err := d.s.store.Device(ctx, device)
	if err != nil {
		return api.AssignmentView{}, err
	}
	if dev.DecommissionedAt != 0 {
		return api.AssignmentView{}, fmt.Errorf("%w: device %s is decommissioned", registry.ErrGone, device)
	}
	if model == "" || rel == 0 {
		return api.AssignmentView{}, fmt.Errorf("%w: model and a release > 0 are required", registry.ErrInvalid)
	}
	v, err := d.assignRelease(ctx, device, model, rel)
	if err != nil {
		return api.AssignmentView{}, err
	}
	d.audit(ctx, actor, "device.assign", device, fmt.Sprintf("%s release %d (%s)", model, rel, v.Digest[:16]))
	return v, nil
}

// assignRelease assigns device the model's release, which the release
// repository (the keys the devices trust) must list and whose bundle must
// be uploaded: the director signs it into the device's desired state and
// a wave is scheduled. It is Assign without the API's checks and audit
// entry, shared with the rollout scheduler.
func (d *deliveryService) assignRelease(ctx context.Context, device, model string, rel uint64) (api.AssignmentView, error) {
	targets, err := d.trust.Targets()
	if err != nil {
		return api.AssignmentView{}, err
	}
	var tf *metadata.TargetFiles
	for _, t := range targets {
		if c, ok := releaseCustom(t); ok && c.Model == model && c.ReleaseCounter == rel {
			tf = t
		}
	}
	if tf == nil {
		return api.AssignmentView{}, fmt.Errorf("%w: model %s release %d is not in the release repository", registry.ErrNotFound, model, rel)
	}
	digest := targetDigest(tf)
	if !d.uploaded(digest) {
		return api.AssignmentView{}, fmt.Errorf("%w: the bundle of %s is not uploaded: flotctl bundle push", registry.ErrConflict, tf.Path)
	}
	prev, _, err := d.assigned.get(ctx, device, model)
	if err != nil {
		return api.AssignmentView{}, err
	}
	if err := d.assigned.set(ctx, device, assignment{Model: model, Release: rel, Target: tf.Path, Digest: digest}); err != nil {
		return api.AssignmentView{}, err
	}
	d.publishManifest(ctx, digest)
	d.s.registry.PublishDesired(ctx, device)
	except := ""
	if prev.Digest != digest {
		except = prev.Digest
	}
	d.startWave(digest, except)
	a, _, err := d.assigned.get(ctx, device, model)
	if err != nil {
		return api.AssignmentView{}, err
	}
	return api.AssignmentView{Device: device, Model: model, Release: rel, Target: tf.Path, Digest: digest, Revision: a.Revision}, nil
}

// directorMetadata is the registry's DirectorMetadata hook: the device's
// assignments, signed at revision rev. Assignments whose target the
// release repository no longer lists are left out.
func (d *deliveryService) directorMetadata(ctx context.Context, device string, rev uint64) (map[string][]byte, error) {
	as, err := d.assigned.of(ctx, device)
	if err != nil {
		return nil, err
	}
	if len(as) == 0 {
		return nil, nil
	}
	targets, err := d.trust.Targets()
	if err != nil {
		return nil, err
	}
	byPath := map[string]*metadata.TargetFiles{}
	for _, t := range targets {
		byPath[t.Path] = t
	}
	var sign []*metadata.TargetFiles
	for _, a := range as {
		if t, ok := byPath[a.Target]; ok && targetDigest(t) == a.Digest {
			sign = append(sign, t)
		} else {
			d.s.log.Warn("assignment no longer released; left out", "device", device, "target", a.Target)
		}
	}
	md, err := d.trust.Sign(device, rev, sign)
	if err != nil {
		return nil, err
	}
	if err := d.assigned.signed(ctx, device, rev, d.s.cfg.Now()); err != nil {
		// Only the renewal time is lost: the metadata is renewed early.
		d.s.log.Warn("signing time not recorded", "device", device, "err", err)
	}
	return md, nil
}

// startWave schedules one wave of digest after WaveDelay (time for the
// devices to verify and subscribe), unless one is already scheduled or
// running: a device assigned meanwhile joins it, and one that comes later
// is served by repair. With except (the bundle the assigning device had),
// the wave leaves out the chunks that bundle shares: a delta wave, whose
// gaps any other device fills by repair.
func (d *deliveryService) startWave(digest, except string) {
	d.wavesMu.Lock()
	if d.waves[digest] {
		d.wavesMu.Unlock()
		return
	}
	d.waves[digest] = true
	d.wavesMu.Unlock()
	s := d.s
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		defer func() {
			d.wavesMu.Lock()
			delete(d.waves, digest)
			d.wavesMu.Unlock()
		}()
		select {
		case <-s.life.Done():
			return
		case <-time.After(s.cfg.WaveDelay):
		}
		o := delivery.WaveOptions{Scheme: s.scheme, Rate: s.cfg.WaveRate}
		if except != "" {
			if _, m, err := d.store.Manifest(except); err == nil {
				o.Except = m
			}
		}
		w, err := delivery.NewWave(d.store, s.mqtt, digest, o)
		if err != nil {
			s.log.Warn("wave not started", "bundle", digest, "err", err)
			return
		}
		st, err := w.Run(s.life)
		s.log.Info("wave sent", "bundle", digest[:16], "chunks", st.Chunks, "bytes", st.Bytes, "elapsed", st.Elapsed, "err", err)
		s.metrics.Add("wave_chunks", int64(st.Chunks))
		d.waveChunks.Add(uint64(st.Chunks))
	}()
}

func (d *deliveryService) audit(ctx context.Context, actor, action, target, detail string) {
	if _, err := d.s.store.AppendAudit(ctx, store.AuditEntry{At: d.s.cfg.Now().UnixMilli(), Actor: actor, Action: action, Target: target, Detail: detail}); err != nil {
		d.s.log.Warn("audit", "err", err)
	}
}

// Progress implements api.Bundles.
func (d *deliveryService) Progress(ctx context.Context, device string) ([]api.ProgressView, error) {
	if _, err := d.s.store.Device(ctx, device); err != nil {
		return nil, err
	}
	return d.progress.of(device), nil
}

// handle takes the messages of the delivery topics; it reports whether
// the message was one of them.
func (d *deliveryService) handle(name string, payload []byte) bool {
	k, id, ok := d.s.scheme.Parse(name)
	if !ok {
		return false
	}
	switch k {
	case topic.Reported:
		var r pb.ReportedState
		if len(payload) > 0 && wire.DecodeTopic(topic.Reported, payload, &r) == nil && r.GetDeviceId() == id {
			before, known := d.progress.report(id, &r, payload, d.s.cfg.Now())
			d.s.alerts.reported(id, before, r.GetModels(), known, d.s.cfg.Now())
		}
		return false // the registry takes it in too
	case topic.ChunkRequest:
		if err := d.repairer.Handle(name, payload); err != nil {
			d.s.log.Debug("chunk request refused", "topic", name, "err", err)
		}
		return true
	case topic.Progress:
		var p pb.FetchProgress
		switch err := wire.DecodeTopic(topic.Progress, payload, &p); {
		case err != nil:
			d.s.metrics.Add("dropped_malformed", 1)
		case p.GetDeviceId() != id:
			d.s.metrics.Add("dropped_malformed", 1)
		case !d.assigned.offered(id, p.GetBundleDigest()):
			d.s.log.Debug("progress for a bundle not assigned; dropped", "device", id)
		default:
			d.progress.put(&p, d.s.cfg.Now())
		}
		return true
	}
	return false
}

// progressBook keeps each device's latest FetchProgress per bundle, and
// its latest reported state: the models and the desired revision it
// answers. Reported states are also written to the store (a few at a
// time, by persistReports), and read back at start, so a restarted
// control plane knows what every device runs before it reports again.
type progressBook struct {
	mu        sync.Mutex
	m         map[string]map[string]api.ProgressView
	models    map[string][]*pb.ModelState
	revisions map[string]uint64
	unsaved   map[string]store.DeviceReport
}

func newProgressBook() *progressBook {
	return &progressBook{m: map[string]map[string]api.ProgressView{}, models: map[string][]*pb.ModelState{},
		revisions: map[string]uint64{}, unsaved: map[string]store.DeviceReport{}}
}

// report takes in device's reported state r, received at at as payload;
// it returns the models the device reported before, and whether it had.
func (b *progressBook) report(device string, r *pb.ReportedState, payload []byte, at time.Time) (before []*pb.ModelState, known bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	before = b.models[device]
	_, known = b.revisions[device]
	b.models[device] = r.GetModels()
	b.revisions[device] = r.GetDesiredRevision()
	if len(payload) <= store.MaxReportBytes {
		b.unsaved[device] = store.DeviceReport{DeviceID: device, DesiredRevision: r.GetDesiredRevision(), ReceivedAt: at.UnixMilli(),
			Payload: append([]byte(nil), payload...)}
	}
	return before, known
}

// reported is device's latest reported state: its models and the desired
// revision it answers; ok is false when it has reported nothing.
func (b *progressBook) reported(device string) (models []*pb.ModelState, revision uint64, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	revision, ok = b.revisions[device]
	return b.models[device], revision, ok
}

// load reads the stored reported states into the book.
func (b *progressBook) load(ctx context.Context, st *store.Store) error {
	after := ""
	for {
		page, err := st.ListReports(ctx, after, 1000)
		if err != nil {
			return err
		}
		b.mu.Lock()
		for _, rep := range page {
			var r pb.ReportedState
			if err := wire.DecodeTopic(topic.Reported, rep.Payload, &r); err != nil || r.GetDeviceId() != rep.DeviceID {
				continue // what the device reports next replaces it
			}
			b.models[rep.DeviceID] = r.GetModels()
			b.revisions[rep.DeviceID] = r.GetDesiredRevision()
		}
		b.mu.Unlock()
		if len(page) < 1000 {
			return nil
		}
		after = page[len(page)-1].DeviceID
	}
}

// takeUnsaved hands over the reports not yet written.
func (b *progressBook) takeUnsaved() []store.DeviceReport {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.unsaved) == 0 {
		return nil
	}
	out := make([]store.DeviceReport, 0, len(b.unsaved))
	for _, r := range b.unsaved {
		out = append(out, r)
	}
	clear(b.unsaved)
	return out
}

// requeue puts back reports whose write failed, unless a newer one came.
func (b *progressBook) requeue(rs []store.DeviceReport) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range rs {
		if _, newer := b.unsaved[r.DeviceID]; !newer {
			b.unsaved[r.DeviceID] = r
		}
	}
}

// reportsEvery is how often reported states are written to the store.
const reportsEvery = 200 * time.Millisecond

// persistReports writes the reported states taken in, in batches, until
// ctx ends, then once more.
func (d *deliveryService) persistReports(ctx context.Context) {
	t := time.NewTicker(reportsEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			last, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			d.flushReports(last)
			cancel()
			return
		case <-t.C:
			d.flushReports(ctx)
		}
	}
}

// flushReports writes the reported states taken in since the last write;
// what cannot be written is kept for the next. Close calls it once more
// after the broker session ends, for reports handled after
// persistReports stopped.
func (d *deliveryService) flushReports(ctx context.Context) {
	rs := d.progress.takeUnsaved()
	if len(rs) == 0 {
		return
	}
	if err := d.s.store.PutReports(ctx, rs); err != nil {
		d.progress.requeue(rs)
		d.s.log.Warn("reported states not stored; will retry", "devices", len(rs), "err", err)
	}
}

// ReportedRevision is the desired revision the device's latest reported
// state answers; ok is false when it has reported nothing.
func (s *Server) ReportedRevision(device string) (rev uint64, ok bool) {
	_, rev, ok = s.delivery.progress.reported(device)
	return rev, ok
}

// ReportedModels is what the device last reported of its models: staged
// bundles and refusals (agent/install), and what runs.
func (s *Server) ReportedModels(device string) []*pb.ModelState {
	m, _, _ := s.delivery.progress.reported(device)
	return m
}

func (b *progressBook) put(p *pb.FetchProgress, at time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	dev := p.GetDeviceId()
	if b.m[dev] == nil {
		b.m[dev] = map[string]api.ProgressView{}
	}
	b.m[dev][p.GetBundleDigest()] = api.ProgressView{Device: dev, Digest: p.GetBundleDigest(), Model: p.GetModel(), Release: p.GetRelease(),
		State: progressState(p.GetState()), BytesHave: p.GetBytesHave(), BytesTotal: p.GetBytesTotal(),
		ChunksHave: p.GetChunksHave(), ChunksTotal: p.GetChunksTotal(), Rate: p.GetRate(), Error: p.GetError(), At: at.UTC()}
}

func progressState(s pb.FetchProgress_State) string {
	switch s {
	case pb.FetchProgress_STATE_VERIFYING:
		return "verifying"
	case pb.FetchProgress_STATE_FETCHING:
		return "fetching"
	case pb.FetchProgress_STATE_UNPACKING:
		return "unpacking"
	case pb.FetchProgress_STATE_STAGED:
		return "staged"
	case pb.FetchProgress_STATE_FAILED:
		return "failed"
	}
	return "unknown"
}

func (b *progressBook) of(device string) []api.ProgressView {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []api.ProgressView
	for _, v := range b.m[device] {
		out = append(out, v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].At.After(out[j].At) })
	return out
}
