package store

import (
	"context"
	"database/sql"
	"time"
)

// SQLite's write-ahead log is copied back into the database file by a
// checkpoint. Left to SQLite, the commit that takes the log past its
// threshold runs the checkpoint itself, on the single writer connection:
// for the telemetry ingest's large transactions that was a quarter to a
// half of the store's time, with every other write waiting behind it. The
// checkpointer does it instead on its own connection and goroutine (a
// PASSIVE checkpoint, which neither waits for nor blocks the writer or
// readers), soon after commits and every checkpointTick; the writer's own
// automatic checkpoint stays as a backstop at writerCheckpointPages, should
// the log grow that far because the checkpointer falls behind.
const (
	writerCheckpointPages = 16384 // 64 MiB of 4 KiB pages
	checkpointGap         = 100 * time.Millisecond
	checkpointTick        = 2 * time.Second
)

type checkpointer struct {
	db   *sql.DB
	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

// startCheckpointer opens a connection of its own to the SQLite database
// at dsn and starts checkpointing.
func startCheckpointer(dsn string) (*checkpointer, error) {
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxIdleTime(0)
	db.SetConnMaxLifetime(0)
	c := &checkpointer{db: db, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c, nil
}

// nudge says a transaction committed; it never blocks. A nil checkpointer
// (a database that has none) ignores it.
func (c *checkpointer) nudge() {
	if c == nil {
		return
	}
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *checkpointer) run() {
	defer close(c.done)
	tick := time.NewTicker(checkpointTick)
	defer tick.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-c.kick:
		case <-tick.C:
		}
		c.checkpoint()
		// Let a few commits gather before the next one.
		select {
		case <-c.stop:
			return
		case <-time.After(checkpointGap):
		}
	}
}

// checkpoint copies what it can of the log into the database file. A
// failure only leaves it for the next one (or the writer's backstop).
func (c *checkpointer) checkpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var busy, logFrames, copied int64
	_ = c.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &copied)
}

// close stops the checkpointer and closes its connection.
func (c *checkpointer) close() error {
	if c == nil {
		return nil
	}
	close(c.stop)
	<-c.done
	return c.db.Close()
}
