package diag

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flotilla-edge/flotilla/agent/lifecycle"
	"github.com/flotilla-edge/flotilla/agent/logring"
	"github.com/flotilla-edge/flotilla/agent/state"
)

// recentErrors caps the journal entries and log records in a status.
const recentErrors = 20

// liveStatus is the running agent's status.
func liveStatus(ctx context.Context, a Agent, logs *logring.Ring) StatusReport {
	st := a.Status()
	in := a.Internals()
	r := StatusReport{Source: SourceAgent, GeneratedAt: time.Now().UTC(), Version: in.Version, DataDir: in.DataDir,
		DesiredRevision: st.DesiredRevision, Counters: st.Counters,
		Broker: &Broker{State: st.State.String(), Session: st.Session, ConnectedSince: st.ConnectedSince,
			LastContact: st.LastContact, LastError: st.LastError}}
	if !in.SkewMeasured.IsZero() {
		s := in.ClockSkew.Seconds()
		r.ClockSkewSeconds, r.SkewMeasuredAt = &s, in.SkewMeasured
	}
	if in.DB != nil {
		r.fromDB(ctx, in.DB, in.Lifecycle == nil)
	} else {
		r.Problems = append(r.Problems, "the agent has not opened its state yet")
	}
	if in.Lifecycle != nil {
		r.Models = liveModels(in.Lifecycle)
		if in.DB != nil { // the probation's start is in the durable record
			if recs, err := in.DB.Models(ctx); err == nil {
				for i := range r.Models {
					for _, rec := range recs {
						if rec.Name == r.Models[i].Name && rec.Phase == lifecycle.PhaseProbation {
							r.Models[i].ProbationSince = rec.ProbationStart
						}
					}
				}
			}
		}
	}
	for i := range r.Models {
		r.Models[i].Slots = slotFolders(in.DataDir, r.Models[i].Name)
	}
	for _, rt := range in.Runtimes {
		r.Runtimes = append(r.Runtimes, Runtime(rt))
	}
	if in.Facts != nil {
		for _, ac := range in.Facts.GetAccelerators() {
			r.Accelerators = append(r.Accelerators, Accelerator{Kind: ac.GetKind(), Vendor: ac.GetVendor(), Model: ac.GetModel(),
				Driver: ac.GetDriverVersion(), Path: ac.GetDevicePath()})
		}
	}
	if in.Telemetry != nil {
		if bs, err := in.Telemetry.Stats(ctx); err != nil {
			r.Problems = append(r.Problems, "telemetry buffer: "+err.Error())
		} else {
			r.Buffer = &Buffer{Records: bs.Records, Pending: bs.Pending, DatabaseBytes: bs.DatabaseBytes, Dropped: bs.Dropped,
				Lost: bs.Lost, Evicted: bs.EvictedRecords + bs.EvictedSummaries, OldestPendingFrom: bs.OldestPendingFrom,
				LastWriteError: bs.LastWriteError}
		}
	}
	r.Disk = diskUse(in.DataDir, &r.Problems)
	r.Disk.Quotas = in.Quotas
	if logs != nil {
		es, _ := logs.Entries(logring.Filter{MinLevel: slog.LevelWarn, Limit: recentErrors})
		for _, e := range es {
			msg := e.Message
			if v := e.Attrs["err"]; v != "" {
				msg += ": " + v
			}
			r.RecentErrors = append(r.RecentErrors, Event{At: e.Time, Level: strings.ToLower(e.Level), Source: "log", Message: msg})
		}
	}
	r.sortErrors()
	return r
}

// DiskStatus reads what it can of an agent that is not running from its
// data folder: the state database read-only, the slot folders, the disk.
// What cannot be read is listed in Problems; the error is only for a data
// folder that does not exist.
func DiskStatus(ctx context.Context, dataDir string) (StatusReport, error) {
	r := StatusReport{Source: SourceDisk, GeneratedAt: time.Now().UTC(), DataDir: dataDir}
	if _, err := os.Stat(dataDir); err != nil {
		return r, fmt.Errorf("diag: data folder: %w", err)
	}
	db, err := state.OpenReadOnly(ctx, dataDir)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
	} else {
		defer db.Close()
		r.fromDB(ctx, db, true)
	}
	for i := range r.Models {
		r.Models[i].Slots = slotFolders(dataDir, r.Models[i].Name)
	}
	r.Disk = diskUse(dataDir, &r.Problems)
	r.sortErrors()
	return r, nil
}

// fromDB fills identity, desired revision, recent errors and (with
// models) the models' records from the state database.
func (r *StatusReport) fromDB(ctx context.Context, db *state.DB, models bool) {
	id, err := db.Identity(ctx)
	switch {
	case errors.Is(err, state.ErrNotEnrolled):
		r.Problems = append(r.Problems, "not enrolled")
	case err != nil:
		r.Problems = append(r.Problems, "identity: "+err.Error())
	default:
		r.Identity = &Identity{DeviceID: id.DeviceID, MQTTURL: id.MQTTURL, TopicPrefix: id.TopicPrefix, EnrolledAt: id.EnrolledAt,
			Certificate: len(id.CertPEM) > 0}
	}
	if r.Source == SourceDisk {
		if rev, _, err := db.Desired(ctx); err != nil {
			r.Problems = append(r.Problems, "desired state: "+err.Error())
		} else {
			r.DesiredRevision = rev
		}
	}
	if models {
		recs, err := db.Models(ctx)
		if err != nil {
			r.Problems = append(r.Problems, "models: "+err.Error())
		}
		for _, rec := range recs {
			r.Models = append(r.Models, recordModel(rec))
		}
	}
	evs, err := db.Recent(ctx, 200)
	if err != nil {
		r.Problems = append(r.Problems, "journal: "+err.Error())
	}
	n := 0
	for _, e := range evs {
		if (e.Level == "warn" || e.Level == "error") && n < recentErrors {
			r.RecentErrors = append(r.RecentErrors, Event{At: e.At, Level: e.Level, Source: "journal", Code: e.Code, Message: e.Message})
			n++
		}
	}
}

func (r *StatusReport) sortErrors() {
	sort.SliceStable(r.RecentErrors, func(i, j int) bool { return r.RecentErrors[i].At.After(r.RecentErrors[j].At) })
	if r.RecentErrors == nil {
		r.RecentErrors = []Event{}
	}
	if r.Models == nil {
		r.Models = []ModelReport{}
	}
}

// liveModels reports what the lifecycle runs, with its counters.
func liveModels(l *lifecycle.Lifecycle) []ModelReport {
	var out []ModelReport
	for _, s := range l.States() {
		m := ModelReport{Name: s.Name, Phase: s.Phase, Health: s.Health.String(), ActiveRelease: s.ActiveRelease,
			ActiveVersion: s.ActiveVersion, ActiveSlot: s.ActiveSlot, PreviousRelease: s.PreviousRelease,
			CandidateRelease: s.CandidateRelease, RejectedRelease: s.RejectedRelease, RejectedReason: s.RejectedReason,
			LastError: s.LastError, Rollbacks: s.Rollbacks}
		if sv, ok := l.Active(s.Name); ok {
			m.Serving, m.Runtime = true, sv.Runtime
		}
		snap := l.Stats().Model(s.Name).Snapshot()
		m.Stats = &ModelStats{Requests: snap.Total.Requests, Errors: snap.Total.Errors, ErrorRate: snap.Total.ErrorRate(),
			P50Millis: millis(snap.Total.P50), P95Millis: millis(snap.Total.P95), P99Millis: millis(snap.Total.P99),
			Crashes: snap.Crashes, ShadowRuns: snap.Total.ShadowRuns, Disagreements: snap.Total.Disagreements}
		out = append(out, m)
	}
	return out
}

// recordModel reports a model from its durable record.
func recordModel(rec state.ModelRecord) ModelReport {
	m := ModelReport{Name: rec.Name, Phase: rec.Phase, Health: rec.Health, ActiveRelease: rec.Active.Release,
		ActiveVersion: rec.Active.Version, ActiveSlot: rec.Active.Slot, PreviousRelease: rec.Previous.Release,
		CandidateRelease: rec.Candidate.Release, RejectedRelease: rec.RejectedRel, RejectedReason: rec.RejectedReason,
		LastError: rec.LastError, Rollbacks: rec.Rollbacks}
	if rec.Phase == lifecycle.PhaseProbation {
		m.ProbationSince = rec.ProbationStart
	}
	if m.Health == "" {
		m.Health = "unspecified"
	}
	return m
}

func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// slotFolders lists a model's slot folders on disk.
func slotFolders(dataDir, model string) []string {
	ents, err := os.ReadDir(filepath.Join(dataDir, "models", model))
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

// diskUse measures the data folder's file system and the agent's parts in it.
func diskUse(dataDir string, problems *[]string) Disk {
	d := Disk{Path: dataDir, Used: map[string]int64{}}
	var fs unix.Statfs_t
	if err := unix.Statfs(dataDir, &fs); err != nil {
		*problems = append(*problems, "disk: "+err.Error())
	} else {
		d.TotalBytes = fs.Blocks * uint64(fs.Bsize)
		d.FreeBytes = fs.Bavail * uint64(fs.Bsize)
	}
	for part, names := range map[string][]string{
		"models":  {"models"},
		"bundles": {"bundles"},
		"metrics": {"metrics.db", "metrics.db-wal", "metrics.db-shm"},
		"state":   {state.DBFile, state.DBFile + "-wal", state.DBFile + "-shm"},
	} {
		var n int64
		for _, name := range names {
			n += treeSize(filepath.Join(dataDir, name))
		}
		d.Used[part] = n
	}
	return d
}

// treeSize is the bytes of the regular files under path (0 if absent).
func treeSize(path string) int64 {
	var n int64
	_ = filepath.WalkDir(path, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if e.Type().IsRegular() {
			if fi, err := e.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}
