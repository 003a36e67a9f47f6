package store

import (
	"context"
	"database/sql"
	"sync"
)

// stmtCache holds write statements prepared once on the writer pool, by
// name, for hot paths whose SQL is long: the telemetry ingest's multi-row
// INSERTs, which SQLite otherwise parses again in every transaction (a
// fifth of the ingest's store time). They are prepared outside any
// transaction (the writer pool has one connection, which a transaction
// holds) and used in one with Tx.StmtContext.
type stmtCache struct {
	mu  sync.Mutex
	m   map[string]*sql.Stmt
	off bool // nothing is prepared (benchmarks of the path before)
}

// prepare prepares query on db under name unless it already is. The lock
// is not held while preparing, which waits for the connection: a
// transaction holding it may be calling get.
func (c *stmtCache) prepare(ctx context.Context, db *sql.DB, name, query string) error {
	if c.get(name) != nil {
		return nil
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[name]; ok {
		return st.Close() // prepared meanwhile by another caller
	}
	if c.m == nil {
		c.m = map[string]*sql.Stmt{}
	}
	c.m[name] = st
	return nil
}

// get is the statement prepared under name, or nil.
func (c *stmtCache) get(name string) *sql.Stmt {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[name]
}

func (c *stmtCache) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	for _, st := range c.m {
		if e := st.Close(); e != nil && err == nil {
			err = e
		}
	}
	c.m = nil
	return err
}
