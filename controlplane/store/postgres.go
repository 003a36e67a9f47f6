package store

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// OpenPostgres opens the PostgreSQL database dsn names (a URL such as
// postgres://user@host:5432/db?sslmode=disable, or key=value pairs) and
// migrates it to the latest schema. Several control-plane replicas may
// open the same database at once: migrations run one after the other
// under an advisory lock, and each is applied once.
//
// Reads and writes share one pool of up to MaxConns connections: unlike
// SQLite, PostgreSQL runs writers side by side, and the queries that read
// a row before writing it in the same transaction lock it (FOR UPDATE).
func OpenPostgres(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w: %s", ErrInvalid, redactDSN(err.Error()))
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = "flotilla-server"
	db := stdlib.OpenDB(*cfg)
	n := max(8, 2*runtime.GOMAXPROCS(0))
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxIdleTime(5 * time.Minute)
	db.SetConnMaxLifetime(time.Hour)

	s := &Store{wdb: db, rdb: db, d: postgresDialect}
	where := cfg.Host + "/" + cfg.Database
	if err := s.Ping(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres %s: %w", where, err)
	}
	if err := s.Migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres %s: %w", where, err)
	}
	if err := s.prepare(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("open postgres %s: %w", where, err)
	}
	return s, nil
}

// redactDSN hides a password pgx may quote back in a parse error.
func redactDSN(msg string) string {
	if i := strings.Index(msg, "password="); i >= 0 {
		end := strings.IndexAny(msg[i:], " &")
		if end < 0 {
			end = len(msg) - i
		}
		msg = msg[:i] + "password=xxxxx" + msg[i+end:]
	}
	return msg
}

// Backend names the database the store runs on: "sqlite" or "postgres".
func (s *Store) Backend() string { return s.d.name }
