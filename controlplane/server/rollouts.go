package server

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	"github.com/flotilla-edge/flotilla/controlplane/leader"
	"github.com/flotilla-edge/flotilla/controlplane/registry"
	"github.com/flotilla-edge/flotilla/controlplane/rollout"
	"github.com/flotilla-edge/flotilla/controlplane/store"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// RolloutConfig tunes the rollout scheduler; the zero value takes the
// defaults.
type RolloutConfig struct {
	// Every is how often every unfinished rollout is reconciled, on a real
	// ticker (the times judged are Config.Now's); default 10 s.
	Every time.Duration
	// RetryEvery is how often rollbacks still pending are sent again;
	// default 1 minute.
	RetryEvery time.Duration
	// CommitOnStaged counts a device that reports a release staged, and no
	// release active, as running it healthy. It is for agents that stage
	// bundles but run no model lifecycle (no runtime configured), which
	// never report an active release; leave it off otherwise.
	CommitOnStaged bool
}

// Default rollout scheduler settings.
const (
	DefaultRolloutEvery = 10 * time.Second
	DefaultRolloutRetry = time.Minute
)

// maxSummaryPayload bounds one stored window summary read back.
const maxSummaryPayload = 4 << 20

// rolloutService is the rollout scheduler: it reconciles every unfinished
// rollout each tick (rollout.Reconcile), carries out the decisions through
// the bundle delivery (rollout.Execute), stores the result with its audit
// entries, and alerts on breaches and on-device rollbacks. It is also the
// API's api.Rollouts.
type rolloutService struct {
	s   *Server
	cfg RolloutConfig

	// mu serialises passes and operator actions within this process; the
	// store's version check catches another replica's writes.
	mu        sync.Mutex
	gates     map[string][]rollout.Evaluation // latest pass's, by rollout
	lastRetry map[string]time.Time
	nudged    map[string]time.Time // unreported devices sent their desired state again, when

	holder  string        // this server's name in the scheduler's lease
	leading atomic.Uint64 // the lease's epoch while this server holds it, else 0
}

var (
	_ api.Rollouts     = (*rolloutService)(nil)
	_ rollout.Assigner = rolloutAssigner{}
)

func (s *Server) openRollouts() {
	c := s.cfg.Rollouts
	c.Every = cmp.Or(c.Every, DefaultRolloutEvery)
	c.RetryEvery = cmp.Or(c.RetryEvery, DefaultRolloutRetry)
	s.rollouts = &rolloutService{s: s, cfg: c, holder: instanceID(), gates: map[string][]rollout.Evaluation{}, lastRetry: map[string]time.Time{},
		nudged: map[string]time.Time{}}
}

// schedulerLease names the rollout scheduler's lease: of several
// replicas on one PostgreSQL database, only its holder reconciles.
const schedulerLease = "rollout-scheduler"

// start runs the scheduler loop until the server closes, while this
// server holds the scheduler's lease (controlplane/leader): at once on
// SQLite, which one server uses; on PostgreSQL whichever replica takes
// it, until its connection to the database ends. Every rollout state it
// saves is fenced by the lease's epoch.
func (r *rolloutService) start() {
	s := r.s
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		cfg := leader.Config{Name: schedulerLease, Holder: r.holder, Retry: r.cfg.Every, Check: r.cfg.Every,
			Logger: s.log.With("component", "rollouts")}
		_ = leader.Run(s.life, s.store, cfg, func(ctx context.Context, epoch uint64) {
			r.leading.Store(epoch)
			defer r.leading.Store(0)
			t := time.NewTicker(r.cfg.Every)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					r.tick(ctx, epoch)
				}
			}
		})
	}()
}

// fencedStore is the store as the scheduler writes rollout states: under
// its lease's epoch, refused once a newer leader began.
type fencedStore struct {
	*store.Store
	epoch uint64
}

// SaveRollout implements rollout.Store.
func (f fencedStore) SaveRollout(ctx context.Context, r store.Rollout, devices []store.RolloutDevice, remove []string, audit []store.AuditEntry) (store.Rollout, error) {
	return f.Store.SaveRolloutFenced(ctx, schedulerLease, f.epoch, r, devices, remove, audit)
}

// unfinished are the phases reconciled each tick: a completed rollout
// still assigns devices that join its selector later.
var unfinished = []rollout.Phase{rollout.PhaseRunning, rollout.PhasePaused, rollout.PhaseRollingBack, rollout.PhaseCompleted}

// tick reconciles every unfinished rollout once, as the scheduler's
// leader at epoch.
func (r *rolloutService) tick(ctx context.Context, epoch uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ph := range unfinished {
		f := store.RolloutFilter{Phase: string(ph), Limit: store.DefaultRolloutLimit}
		for {
			rows, err := r.s.store.ListRollouts(ctx, f)
			if err != nil {
				r.s.log.Warn("rollouts not listed", "err", err)
				return
			}
			for _, row := range rows {
				if err := r.reconcile(ctx, row.ID, epoch); err != nil && ctx.Err() == nil {
					r.s.log.Warn("rollout pass failed", "rollout", row.ID, "err", err)
				}
			}
			if len(rows) < f.Limit {
				break
			}
			f.Before = &rows[len(rows)-1]
		}
	}
}

// reconcile runs one pass of rollout id: load, observe, decide, carry out,
// store. r.mu is held.
func (r *rolloutService) reconcile(ctx context.Context, id string, epoch uint64) error {
	now := r.s.cfg.Now()
	rec, err := rollout.Load(ctx, r.s.store, id)
	if err != nil {
		return err
	}
	if rec.State.Phase == rollout.PhaseRolledBack {
		return nil
	}
	in, err := r.input(ctx, rec, now)
	if err != nil {
		return err
	}
	res := rollout.Reconcile(in)
	r.s.metrics.Add("rollout_passes", 1)
	r.gates[id] = res.Gates
	a := rolloutAssigner{r.s.delivery}
	if !res.State.Equal(rec.State) || len(res.Decisions) > 0 {
		if err := rollout.Execute(ctx, a, &res.State, res.Decisions); err != nil {
			r.s.log.Warn("rollout decisions not all carried out", "rollout", id, "err", err)
		}
		decisions := carriedOut(res.State, res.Decisions)
		if err := rec.Save(ctx, fencedStore{r.s.store, epoch}, res.State, decisions, now.UnixMilli()); err != nil {
			return err
		}
		r.s.alerts.rolloutDecisions(rec, decisions, now)
	}
	r.nudge(ctx, in.Devices, now)
	if last := r.lastRetry[id]; now.Sub(last) >= r.cfg.RetryEvery {
		if !last.IsZero() {
			if err := rollout.Retry(ctx, a, rec.Spec, rec.State, now.Add(-r.cfg.RetryEvery).UnixMilli()); err != nil {
				r.s.log.Warn("rollbacks not resent", "rollout", id, "err", err)
			}
		}
		r.lastRetry[id] = now
	}
	return nil
}

// nudge publishes the desired state again, under a new revision, to each
// online device the rollout holds back because it never reported (at
// most once per RetryEvery): an agent reports on accepting a desired
// state, and one that missed its own or whose report was lost would
// otherwise never be judged. r.mu is held.
func (r *rolloutService) nudge(ctx context.Context, devs []rollout.Device, now time.Time) {
	for _, d := range devs {
		if !d.Unreported {
			delete(r.nudged, d.ID)
			continue
		}
		if !d.Online || d.Decommissioned {
			continue
		}
		if last, ok := r.nudged[d.ID]; ok && now.Sub(last) < r.cfg.RetryEvery && !now.Before(last) {
			continue
		}
		r.nudged[d.ID] = now
		r.s.registry.PublishDesired(ctx, d.ID)
		r.s.metrics.Add("rollout_nudges", 1)
	}
}

// carriedOut drops the assignments Execute undid (their devices are
// eligible again), so the audit log records only what was sent.
func carriedOut(st rollout.State, ds []rollout.Decision) []rollout.Decision {
	out := ds[:0:0]
	for _, d := range ds {
		if d.Kind == rollout.DecideAssign {
			if cur := st.Devices[d.Device]; cur == nil || cur.Phase != rollout.DeviceAssigned {
				continue
			}
		}
		out = append(out, d)
	}
	return out
}

// input gathers what one reconciliation of rec looks at: the selected
// devices with their facts and reported model state, their summaries in
// the gate window, the manifests and the maintenance time zones.
func (r *rolloutService) input(ctx context.Context, rec *rollout.Record, now time.Time) (rollout.Input, error) {
	spec := rec.Spec
	in := rollout.Input{Spec: spec, State: rec.State, NowMs: now.UnixMilli(), Summaries: map[string][]*pb.WindowSummary{}}
	m, err := r.s.delivery.manifestOf(spec.Bundle.Model, spec.Bundle.Release)
	if err != nil {
		return in, err
	}
	in.Manifest = m
	in.Previous = map[uint64]*pb.BundleManifest{}
	for _, ds := range rec.State.Devices {
		if ds.From == 0 || in.Previous[ds.From] != nil {
			continue
		}
		if pm, err := r.s.delivery.manifestOf(spec.Bundle.Model, ds.From); err == nil {
			in.Previous[ds.From] = pm
		}
	}
	if spec.Bundle.RollbackRelease == 0 {
		in.Rereleases = r.s.delivery.rereleases(spec.Bundle.Model, spec.Bundle.Release, rec.State)
	}
	var labels []map[string]string
	opts := store.ListOptions{Selector: spec.Selector.Labels, Limit: 1000}
	for {
		devs, err := r.s.store.ListDevices(ctx, opts)
		if err != nil {
			return in, err
		}
		for _, d := range devs {
			in.Devices = append(in.Devices, r.device(d, spec.Bundle.Model))
			labels = append(labels, d.Labels)
		}
		if len(devs) < opts.Limit {
			break
		}
		opts.After = devs[len(devs)-1].ID
	}
	in.Zones = rollout.Zones(spec, labels)
	from, to := rollout.Window(spec, rec.State, in.NowMs)
	if to > from {
		rows, err := r.s.store.ListSummaries(ctx, store.SummaryFilter{Model: spec.Bundle.Model, FromMs: from, ToMs: to})
		if err != nil {
			return in, err
		}
		for _, row := range rows {
			var ws pb.WindowSummary
			if err := wire.Decode(row.Payload, maxSummaryPayload, &ws); err != nil {
				r.s.log.Warn("stored summary unreadable; left out", "device", row.DeviceID, "err", err)
				continue
			}
			in.Summaries[row.DeviceID] = append(in.Summaries[row.DeviceID], &ws)
		}
	}
	return in, nil
}

// device is what the reconciler knows of d: its labels, facts (from its
// birth), reported state of model, the revision of its latest desired
// state and the one its latest report answers.
func (r *rolloutService) device(d store.Device, model string) rollout.Device {
	out := rollout.Device{ID: d.ID, Labels: d.Labels, Online: d.Online, Decommissioned: !d.Active(), DesiredRevision: d.DesiredRevision}
	if len(d.Facts) > 0 {
		var f pb.Facts
		if err := wire.Decode(d.Facts, len(d.Facts), &f); err == nil {
			out.Facts = &f
		}
	}
	models, rev, ok := r.s.delivery.progress.reported(d.ID)
	out.ReportedRevision, out.Unreported = rev, !ok
	for _, m := range models {
		if m.GetName() == model {
			out.Model = m
		}
	}
	if r.cfg.CommitOnStaged {
		out.Model = stagedAsActive(out.Model)
	}
	return out
}

// stagedAsActive reads a model state that has a release staged and none
// active as running the staged release healthy (RolloutConfig.CommitOnStaged).
func stagedAsActive(m *pb.ModelState) *pb.ModelState {
	if m == nil || m.GetActiveRelease() != 0 || m.GetStagedRelease() == 0 {
		return m
	}
	c := proto.Clone(m).(*pb.ModelState)
	c.ActiveRelease, c.ActiveVersion = c.StagedRelease, c.StagedVersion
	if c.GetLastError() == "" {
		c.Health = pb.ModelState_HEALTH_HEALTHY
	}
	return c
}

// manifestOf is the manifest of the model's release: the release
// repository must list it and its bundle must be uploaded.
func (d *deliveryService) manifestOf(model string, rel uint64) (*pb.BundleManifest, error) {
	targets, err := d.trust.Targets()
	if err != nil {
		return nil, err
	}
	for _, tf := range targets {
		if c, ok := releaseCustom(tf); ok && c.Model == model && c.ReleaseCounter == rel {
			_, m, err := d.store.Manifest(targetDigest(tf))
			if errors.Is(err, bundle.ErrNotFound) {
				return nil, fmt.Errorf("%w: the bundle of %s release %d is not uploaded: flotctl bundle push", registry.ErrConflict, model, rel)
			}
			return m, err
		}
	}
	return nil, fmt.Errorf("%w: model %s release %d is not in the release repository", registry.ErrNotFound, model, rel)
}

// rereleases finds, for each release the devices of st ran before, a
// re-release of its content above release (rollout.Input.Rereleases): the
// lowest counter the release repository lists whose uploaded manifest is
// that release's but for the counter and display version (what flotctl
// bundle rerelease makes).
func (d *deliveryService) rereleases(model string, release uint64, st rollout.State) map[uint64]uint64 {
	want := map[uint64]bool{}
	for _, ds := range st.Devices {
		if ds.From != 0 && ds.From < release {
			want[ds.From] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	targets, err := d.trust.Targets()
	if err != nil {
		return nil
	}
	content := func(tf *metadata.TargetFiles) *pb.BundleManifest {
		_, m, err := d.store.Manifest(targetDigest(tf))
		if err != nil {
			return nil
		}
		c := proto.Clone(m).(*pb.BundleManifest)
		c.Release, c.Version = 0, ""
		return c
	}
	var above []*metadata.TargetFiles
	old := map[uint64]*pb.BundleManifest{}
	for _, tf := range targets {
		c, ok := releaseCustom(tf)
		if !ok || c.Model != model {
			continue
		}
		switch {
		case c.ReleaseCounter > release:
			above = append(above, tf)
		case want[c.ReleaseCounter]:
			if m := content(tf); m != nil {
				old[c.ReleaseCounter] = m
			}
		}
	}
	sort.Slice(above, func(i, j int) bool {
		a, _ := releaseCustom(above[i])
		b, _ := releaseCustom(above[j])
		return a.ReleaseCounter < b.ReleaseCounter
	})
	out := map[uint64]uint64{}
	for _, tf := range above {
		m := content(tf)
		if m == nil {
			continue
		}
		c, _ := releaseCustom(tf)
		for from, om := range old {
			if _, done := out[from]; !done && proto.Equal(m, om) {
				out[from] = c.ReleaseCounter
			}
		}
	}
	return out
}

// rolloutAssigner is rollout.Assigner over the bundle delivery: the
// release must be listed by the release repository, whose keys the
// devices trust, and the director signs it into the device's desired
// state. The rollout's own audit entries record each assignment.
type rolloutAssigner struct{ d *deliveryService }

// Assign implements rollout.Assigner.
func (a rolloutAssigner) Assign(ctx context.Context, device, model string, rel uint64) error {
	if rel == 0 {
		return fmt.Errorf("%w: release 0", registry.ErrInvalid)
	}
	_, err := a.d.assignRelease(ctx, device, model, rel)
	return err
}

// Rollback implements rollout.Assigner: it assigns rel, or withdraws the
// device's assignment of model when rel is 0. Either way the device gets a
// desired state of a new revision, even when there was nothing to
// withdraw: the scheduler counts it back only on a report answering a
// revision after the one it had when sent back.
func (a rolloutAssigner) Rollback(ctx context.Context, device, model string, rel uint64) error {
	if rel != 0 {
		_, err := a.d.assignRelease(ctx, device, model, rel)
		return err
	}
	if _, err := a.d.assigned.remove(ctx, device, model); err != nil {
		return err
	}
	a.d.s.registry.PublishDesired(ctx, device)
	return nil
}

// CreateRollout implements api.Rollouts: the spec is parsed strictly, and
// the release must be released and uploaded.
func (r *rolloutService) CreateRollout(ctx context.Context, actor string, specText []byte) (api.RolloutView, error) {
	if len(specText) > store.MaxRolloutSpecBytes {
		return api.RolloutView{}, fmt.Errorf("%w: spec over %d bytes", registry.ErrInvalid, store.MaxRolloutSpecBytes)
	}
	spec, err := rollout.Parse(specText)
	if err != nil {
		return api.RolloutView{}, fmt.Errorf("%w: %w", registry.ErrInvalid, err)
	}
	if _, err := r.s.delivery.manifestOf(spec.Bundle.Model, spec.Bundle.Release); err != nil {
		return api.RolloutView{}, err
	}
	if rb := spec.Bundle.RollbackRelease; rb != 0 {
		if _, err := r.s.delivery.manifestOf(spec.Bundle.Model, rb); err != nil {
			return api.RolloutView{}, fmt.Errorf("rollback release: %w", err)
		}
	}
	r.mu.Lock()
	rec, err := rollout.Create(ctx, r.s.store, newRolloutID(), actor, specText, r.s.cfg.Now().UnixMilli())
	if err != nil {
		r.mu.Unlock()
		return api.RolloutView{}, err
	}
	// The first pass at once, on the scheduler's leader: the operator
	// sees the canaries chosen (another replica leaves it to the leader's
	// next tick).
	if epoch := r.leading.Load(); epoch != 0 {
		if err := r.reconcile(ctx, rec.State.ID, epoch); err != nil {
			r.s.log.Warn("rollout first pass failed", "rollout", rec.State.ID, "err", err)
		}
	}
	r.mu.Unlock()
	return r.view(ctx, rec.State.ID, false)
}

func newRolloutID() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "ro-" + hex.EncodeToString(b)
}

// ListRollouts implements api.Rollouts.
func (r *rolloutService) ListRollouts(ctx context.Context, q api.RolloutQuery) ([]api.RolloutView, error) {
	rows, err := r.s.store.ListRollouts(ctx, store.RolloutFilter{Model: q.Model, Phase: q.Phase, Limit: q.Limit})
	if err != nil {
		return nil, err
	}
	out := make([]api.RolloutView, 0, len(rows))
	for _, row := range rows {
		rec, err := rollout.Load(ctx, r.s.store, row.ID)
		if err != nil {
			return nil, err
		}
		out = append(out, rolloutView(rec, nil, false))
	}
	return out, nil
}

// Rollout implements api.Rollouts.
func (r *rolloutService) Rollout(ctx context.Context, id string, withDevices bool) (api.RolloutView, error) {
	return r.view(ctx, id, withDevices)
}

func (r *rolloutService) view(ctx context.Context, id string, withDevices bool) (api.RolloutView, error) {
	rec, err := rollout.Load(ctx, r.s.store, id)
	if err != nil {
		return api.RolloutView{}, err
	}
	r.mu.Lock()
	gates, ok := r.gates[id]
	r.mu.Unlock()
	if !ok && rec.State.Phase != rollout.PhaseRolledBack {
		// Not reconciled by this process yet: a dry pass, nothing carried out.
		if in, err := r.input(ctx, rec, r.s.cfg.Now()); err == nil {
			gates = rollout.Reconcile(in).Gates
		}
	}
	return rolloutView(rec, gates, withDevices), nil
}

// ActRollout implements api.Rollouts: the action is applied, stored with
// its audit entry (who, what, why), and carried out by a pass at once.
func (r *rolloutService) ActRollout(ctx context.Context, id, actor, action, why string) (api.RolloutView, error) {
	r.mu.Lock()
	rec, err := rollout.Load(ctx, r.s.store, id)
	if err != nil {
		r.mu.Unlock()
		return api.RolloutView{}, err
	}
	now := r.s.cfg.Now()
	next, d, err := rollout.Act(rec.Spec, rec.State, rollout.Action(action), actor, why, now.UnixMilli())
	if err != nil {
		r.mu.Unlock()
		if errors.Is(err, rollout.ErrAction) {
			return api.RolloutView{}, fmt.Errorf("%w: %w", registry.ErrConflict, err)
		}
		return api.RolloutView{}, err
	}
	if err := rec.Save(ctx, r.s.store, next, []rollout.Decision{d}, now.UnixMilli()); err != nil {
		r.mu.Unlock()
		return api.RolloutView{}, err
	}
	if epoch := r.leading.Load(); epoch != 0 {
		if err := r.reconcile(ctx, id, epoch); err != nil {
			r.s.log.Warn("rollout pass after action failed", "rollout", id, "err", err)
		}
	}
	r.mu.Unlock()
	return r.view(ctx, id, false)
}

// RolloutAudit implements api.Rollouts.
func (r *rolloutService) RolloutAudit(ctx context.Context, id string, limit int, before int64) ([]api.AuditView, error) {
	if _, err := r.s.store.Rollout(ctx, id); err != nil {
		return nil, err
	}
	es, err := r.s.store.ListAuditFor(ctx, rollout.AuditTarget(id), limit, before)
	if err != nil {
		return nil, err
	}
	out := make([]api.AuditView, 0, len(es))
	for _, e := range es {
		out = append(out, api.AuditView{ID: e.ID, At: time.UnixMilli(e.At).UTC(), Actor: e.Actor, Action: e.Action, Target: e.Target, Detail: e.Detail})
	}
	return out, nil
}

func rolloutView(rec *rollout.Record, gates []rollout.Evaluation, withDevices bool) api.RolloutView {
	st, spec := rec.State, rec.Spec
	v := api.RolloutView{ID: st.ID, Name: spec.Name, Model: spec.Bundle.Model, Release: spec.Bundle.Release,
		Phase: string(st.Phase), Stage: st.Stage, Stages: len(spec.Stages), Reason: st.Reason, Policy: string(spec.FailurePolicy),
		CreatedBy: rec.Row.CreatedBy, CreatedAt: time.UnixMilli(rec.Row.CreatedAt).UTC(), UpdatedAt: time.UnixMilli(rec.Row.UpdatedAt).UTC(),
		Devices: map[string]int{}}
	if st.Stage < len(spec.Stages) {
		v.StageName = spec.Stages[st.Stage].Name
	}
	for p, n := range st.Counts() {
		v.Devices[string(p)] = n
	}
	for _, e := range gates {
		v.Gates = append(v.Gates, api.GateView{Gate: e.Gate, Status: string(e.Status), Value: e.Value, Baseline: e.Baseline,
			HasBaseline: e.HasBaseline, Limit: e.Limit, Detail: e.Detail, From: time.UnixMilli(e.FromMs).UTC(), To: time.UnixMilli(e.ToMs).UTC()})
	}
	if withDevices {
		v.Spec = string(rec.Row.Spec)
		ids := make([]string, 0, len(st.Devices))
		for id := range st.Devices {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			ds := st.Devices[id]
			v.DeviceStates = append(v.DeviceStates, api.RolloutDeviceView{Device: id, Phase: string(ds.Phase), Stage: ds.Stage,
				From: ds.From, RollbackTo: ds.RollbackTo, Reason: ds.Reason})
		}
	}
	return v
}
