package store

import (
	"regexp"
	"strings"
	"testing"
	"testing/fstest"
)

func TestRebind(t *testing.T) {
	tests := []struct{ in, want string }{
		{`SELECT 1`, `SELECT 1`},
		{`SELECT a FROM t WHERE id = ? AND b < ?`, `SELECT a FROM t WHERE id = $1 AND b < $2`},
		{`SELECT '?' , "a?b", ? FROM t`, `SELECT '?' , "a?b", $1 FROM t`},
		{`UPDATE t SET x = 'it''s ?' WHERE y = ?`, `UPDATE t SET x = 'it''s ?' WHERE y = $1`},
	}
	for _, tt := range tests {
		if got := postgresDialect.rebind(tt.in); got != tt.want {
			t.Errorf("rebind(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if got := sqliteDialect.rebind(tt.in); got != tt.in {
			t.Errorf("sqlite rebind changed %q to %q", tt.in, got)
		}
	}
}

var snippet = regexp.MustCompile(`{{[a-z_]+}}`)

func TestMigrationsExpand(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 {
		t.Fatal("no migrations embedded")
	}
	for _, m := range ms {
		// Keep dialect-specific syntax out of the shared files.
		bare := strings.ToUpper(snippet.ReplaceAllString(m.sql, ""))
		for _, bad := range []string{"AUTOINCREMENT", "BLOB", "BYTEA", "SERIAL", "DATETIME", "TIMESTAMP", "TIMESTAMPTZ", "BOOLEAN"} {
			if regexp.MustCompile(`\b` + bad + `\b`).MatchString(bare) {
				t.Errorf("%s holds %s: use a {{snippet}} or a portable type", m.name, bad)
			}
		}
		for _, d := range []*dialect{sqliteDialect, postgresDialect} {
			if _, err := d.expand(m.sql); err != nil {
				t.Errorf("%s %s: %v", d.name, m.name, err)
			}
		}
	}
	if _, err := sqliteDialect.expand("CREATE TABLE t (x {{nope}})"); err == nil {
		t.Error("unknown snippet expanded without error")
	}
}

func TestLoadMigrationsNumbering(t *testing.T) {
	sql := &fstest.MapFile{Data: []byte("SELECT 1;")}
	tests := map[string]struct {
		files []string
		ok    bool
	}{
		"in order":    {[]string{"0001_a.sql", "0002_b.sql"}, true},
		"gap":         {[]string{"0001_a.sql", "0003_c.sql"}, false},
		"not from 1":  {[]string{"0002_b.sql"}, false},
		"bad name":    {[]string{"0001_a.sql", "2_b.sql"}, false},
		"no name":     {[]string{"0001.sql"}, false},
		"duplicate":   {[]string{"0001_a.sql", "0001_b.sql"}, false},
		"not numeric": {[]string{"abcd_a.sql"}, false},
	}
	for name, tt := range tests {
		fsys := fstest.MapFS{}
		for _, f := range tt.files {
			fsys["m/"+f] = sql
		}
		_, err := loadMigrations(fsys, "m")
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", name, err, tt.ok)
		}
	}
}
