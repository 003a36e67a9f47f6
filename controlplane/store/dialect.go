package store

import (
	"errors"
	"strconv"
	"strings"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect holds the few things that differ between the SQL databases the
// store runs on. SQL text in this package is written once, with ? placeholders
// and the portable subset of SQL; the dialect rewrites what must differ.
type dialect struct {
	name string
	// dollarParams is set where placeholders are $1..$n rather than ?.
	dollarParams bool
	// forUpdate is appended to a SELECT that reads a row the same
	// transaction then writes. SQLite has a single writer and an immediate
	// transaction already holds the write lock, so it needs nothing there.
	forUpdate string
	// forShare is appended to a SELECT whose row must not be deleted
	// before the transaction ends (SQLite: nothing, as forUpdate).
	forShare string
	// migrationLock, when set, is run first in every migration transaction so
	// that several servers starting at once migrate one after the other.
	migrationLock string
	// types expands the {{…}} type snippets in migrations.
	types *strings.Replacer
	// uniqueViolation reports whether err is a primary-key or unique
	// constraint failure.
	uniqueViolation func(err error) bool
}

var sqliteDialect = &dialect{
	name: "sqlite",
	types: strings.NewReplacer(
		"{{bytes}}", "BLOB",
		"{{key}}", "TEXT",
		"{{serial_pk}}", "INTEGER PRIMARY KEY", // an alias of the rowid
	),
	uniqueViolation: func(err error) bool {
		var e *sqlite.Error
		if !errors.As(err, &e) {
			return false
		}
		return e.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || e.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE
	},
}

// postgresDialect is the PostgreSQL backend's (OpenPostgres).
var postgresDialect = &dialect{
	name:          "postgres",
	dollarParams:  true,
	forUpdate:     " FOR UPDATE",
	forShare:      " FOR SHARE",
	migrationLock: "SELECT pg_advisory_xact_lock(7280179125430142)", // any constant, fixed forever
	types: strings.NewReplacer(
		"{{bytes}}", "BYTEA",
		// Keyset pagination and tests expect byte order, not the locale's.
		"{{key}}", `TEXT COLLATE "C"`,
		"{{serial_pk}}", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
	),
	uniqueViolation: func(err error) bool {
		// *pgconn.PgError has SQLState; 23505 is unique_violation.
		var e interface{ SQLState() string }
		return errors.As(err, &e) && e.SQLState() == "23505"
	},
}

// rebind rewrites the ? placeholders of query for the dialect. Question
// marks inside quoted strings and identifiers are left alone.
func (d *dialect) rebind(query string) string {
	if !d.dollarParams {
		return query
	}
	return rebindDollar(query)
}

func rebindDollar(query string) string {
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	var quote byte
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// expand turns a migration's text into this dialect's SQL.
func (d *dialect) expand(sql string) (string, error) {
	out := d.types.Replace(sql)
	if i := strings.Index(out, "{{"); i >= 0 {
		end := min(len(out), i+32)
		return "", errors.New("unknown snippet " + strconv.Quote(out[i:end]))
	}
	return out, nil
}
