package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"
)

// Errors of leases, for errors.Is.
var (
	// ErrNotLeader: another process holds the lease.
	ErrNotLeader = errors.New("another replica holds the lease")
	// ErrFenced: a write under a lease whose epoch is no longer the
	// current one: a newer leader has started since.
	ErrFenced = errors.New("lease epoch superseded")
)

// Lease is this process's leadership of one singleton job. On PostgreSQL
// it is a session advisory lock held on a connection of its own, released
// by the server when that connection ends (a crashed or partitioned
// replica loses it); on SQLite, which one process serves, it is
// process-local. Each new lease raises the job's epoch, which FencedTx
// checks on every write.
type Lease struct {
	Name  string
	Epoch uint64

	s    *Store
	conn *sql.Conn // PostgreSQL: the connection holding the lock
	once sync.Once
}

// sqliteLeases are the lease names held in this process (SQLite).
var sqliteLeases sync.Map

// lockKey maps a lease name to the advisory lock's 64-bit key.
func lockKey(name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("flotilla/lease/" + name))
	return int64(h.Sum64())
}

// TryLease takes the lease of name for holder (a replica's name, for
// operators) if no one holds it, and raises its epoch; ErrNotLeader if
// another holds it.
func (s *Store) TryLease(ctx context.Context, name, holder string) (*Lease, error) {
	if name == "" || len(name) > 200 {
		return nil, fmt.Errorf("lease: %w: name of %d bytes", ErrInvalid, len(name))
	}
	l := &Lease{Name: name, s: s}
	if s.d.name == "postgres" {
		conn, err := s.wdb.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("lease %s: %w", name, err)
		}
		var got bool
		if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, lockKey(name)).Scan(&got); err != nil {
			conn.Close()
			return nil, fmt.Errorf("lease %s: %w", name, err)
		}
		if !got {
			conn.Close()
			return nil, fmt.Errorf("lease %s: %w", name, ErrNotLeader)
		}
		l.conn = conn
	} else if _, loaded := sqliteLeases.LoadOrStore(s.leaseID(name), true); loaded {
		return nil, fmt.Errorf("lease %s: %w", name, ErrNotLeader)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		now := time.Now().UnixMilli()
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO leases (name, epoch, holder, started_at) VALUES (?, 0, '', 0)
			ON CONFLICT (name) DO NOTHING`), name); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, s.q(`UPDATE leases SET epoch = epoch + 1, holder = ?, started_at = ? WHERE name = ? RETURNING epoch`),
			holder, now, name).Scan(&l.Epoch)
	})
	if err != nil {
		l.Release()
		return nil, fmt.Errorf("lease %s: %w", name, err)
	}
	return l, nil
}

func (s *Store) leaseID(name string) string { return fmt.Sprintf("%p/%s", s.wdb, name) }

// Check reports whether the lease is still held: on PostgreSQL, whether
// the connection holding the lock still answers. A leader checks it
// before each round of work and stops leading on an error.
func (l *Lease) Check(ctx context.Context) error {
	if l.conn == nil {
		return nil
	}
	if err := l.conn.PingContext(ctx); err != nil {
		return fmt.Errorf("lease %s lost: %w", l.Name, err)
	}
	return nil
}

// Release gives the lease up (once; later calls do nothing). Its epoch
// stays: the next leader raises it.
func (l *Lease) Release() error {
	var err error
	l.once.Do(func() {
		if l.conn == nil {
			sqliteLeases.Delete(l.s.leaseID(l.Name))
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = l.conn.ExecContext(ctx, `SELECT pg_advisory_unlock($1)`, lockKey(l.Name))
		err = errors.Join(err, l.conn.Close())
	})
	return err
}

// FencedTx runs fn in a write transaction that first locks the lease's
// row and checks that epoch is still the current one, else fails with
// ErrFenced and runs nothing. A successor's TryLease waits for such a
// transaction to end, so no write of an old leader lands after a new
// leader began.
func (s *Store) FencedTx(ctx context.Context, name string, epoch uint64, fn func(tx *sql.Tx) error) error {
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var cur uint64
		err := tx.QueryRowContext(ctx, s.q(`SELECT epoch FROM leases WHERE name = ?`+s.d.forUpdate), name).Scan(&cur)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("lease %s: %w: never taken", name, ErrFenced)
		}
		if err != nil {
			return err
		}
		if cur != epoch {
			return fmt.Errorf("lease %s: %w: epoch %d, current %d", name, ErrFenced, epoch, cur)
		}
		return fn(tx)
	})
}

// LeaseHolder returns the lease's current epoch and holder, for status
// pages; ErrNotFound if it was never taken.
func (s *Store) LeaseHolder(ctx context.Context, name string) (epoch uint64, holder string, since int64, err error) {
	err = s.rdb.QueryRowContext(ctx, s.q(`SELECT epoch, holder, started_at FROM leases WHERE name = ?`), name).Scan(&epoch, &holder, &since)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", 0, fmt.Errorf("lease %s: %w", name, ErrNotFound)
	}
	return epoch, holder, since, err
}
