// Package leader runs a singleton job — the rollout scheduler — on exactly
// one control-plane replica at a time. Replicas share one PostgreSQL
// database; the leader holds the job's lease (a session advisory lock,
// see store.Lease), which the database frees when the holder's connection
// ends, so a crashed or partitioned replica hands over to another within
// Config.Retry. Each leadership has an epoch; the job passes it to every
// write (store.FencedTx), so a leader that stalled past its lease cannot
// write after its successor began.
package leader

import (
	"cmp"
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/store"
)

// Leases is the store's part Run needs.
type Leases interface {
	TryLease(ctx context.Context, name, holder string) (*store.Lease, error)
}

// Config names the job and this replica and sets the pace.
type Config struct {
	Name   string // the job, e.g. "rollout-scheduler"
	Holder string // this replica, shown to operators
	// Retry is how often a follower tries to take the lease (default 5 s).
	Retry time.Duration
	// Check is how often the leader checks it still holds it (default 2 s).
	Check  time.Duration
	Logger *slog.Logger
}

// Run takes part in the election until ctx ends: whenever this replica
// holds the lease, lead runs with the epoch and a context that ends when
// the lease is lost or ctx ends; Run waits for lead to return before it
// releases the lease or tries again. A lead that returns by itself gives
// the lease up; Run takes part again after Config.Retry.
func Run(ctx context.Context, st Leases, cfg Config, lead func(ctx context.Context, epoch uint64)) error {
	if cfg.Name == "" {
		return errors.New("leader: no job name")
	}
	retry, check := cmp.Or(cfg.Retry, 5*time.Second), cmp.Or(cfg.Check, 2*time.Second)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log = log.With("job", cfg.Name, "replica", cfg.Holder)
	for {
		l, err := st.TryLease(ctx, cfg.Name, cfg.Holder)
		switch {
		case err == nil:
			log.Info("leading", "epoch", l.Epoch)
			lost := hold(ctx, l, check, lead)
			if err := l.Release(); err != nil {
				log.Debug("lease release", "err", err)
			}
			if lost != nil {
				log.Warn("lease lost; following", "epoch", l.Epoch, "err", lost)
			} else {
				log.Info("lease given up", "epoch", l.Epoch)
			}
		case errors.Is(err, store.ErrNotLeader):
		default:
			log.Warn("lease not taken", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(retry):
		}
	}
}

var errLeadReturned = errors.New("the job returned")

// hold runs lead while l holds, checking every check; it returns why the
// lease was lost, or nil when ctx ended.
func hold(ctx context.Context, l *store.Lease, check time.Duration, lead func(context.Context, uint64)) error {
	lctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(lctx, l.Epoch)
	}()
	t := time.NewTicker(check)
	defer t.Stop()
	var lost error
	for lost == nil {
		select {
		case <-ctx.Done():
			cancel()
			<-done
			return nil
		case <-done: // lead returned by itself: give the lease up, start again
			cancel()
			return errLeadReturned
		case <-t.C:
			cctx, ccancel := context.WithTimeout(ctx, check)
			lost = l.Check(cctx)
			ccancel()
		}
	}
	cancel()
	<-done
	return lost
}
