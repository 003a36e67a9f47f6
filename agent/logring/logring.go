// Package logring keeps the agent's recent log records in memory, in a
// fixed-size ring, so that diagnostics (agent/diag) can show and filter
// them on a device with no log shipping and a read-only journal.
//
// A Ring wraps the process's slog.Handler: every record the ring's level
// allows is kept (attributes flattened to strings, groups joined with
// dots) and also passed on to the wrapped handler when that one wants it.
// The ring never blocks logging for long: one short mutex section per
// record, no allocation beyond the record's own copy.
package logring

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// DefaultSize is the ring's capacity when New is given 0.
const DefaultSize = 2000

// maxValue caps one attribute value or message kept, in bytes.
const maxValue = 4096

// Entry is one kept log record.
type Entry struct {
	Time    time.Time         `json:"time"`
	Level   string            `json:"level"`
	Message string            `json:"msg"`
	Attrs   map[string]string `json:"attrs,omitempty"`
}

// Ring is a fixed-size buffer of recent records. It is safe for
// concurrent use.
type Ring struct {
	level slog.Leveler

	mu    sync.Mutex
	buf   []Entry
	next  int    // where the next entry goes
	total uint64 // entries ever kept
}

// New returns a ring of size entries (0 = DefaultSize) keeping records at
// level and above (nil = info).
func New(size int, level slog.Leveler) *Ring {
	if size <= 0 {
		size = DefaultSize
	}
	if level == nil {
		level = slog.LevelInfo
	}
	return &Ring{level: level, buf: make([]Entry, 0, size)}
}

// Handler returns a handler that keeps records in r and passes them on to
// next (nil = keep only).
func (r *Ring) Handler(next slog.Handler) slog.Handler {
	return &handler{ring: r, next: next}
}

func (r *Ring) add(e Entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.buf) < cap(r.buf) {
		r.buf = append(r.buf, e)
	} else {
		r.buf[r.next] = e
	}
	r.next = (r.next + 1) % cap(r.buf)
	r.total++
}

// Filter selects entries.
type Filter struct {
	// MinLevel keeps entries at this level and above.
	MinLevel slog.Level
	// Contains keeps entries whose message, an attribute key or value
	// contains it (case-insensitive); "" = all.
	Contains string
	// Since keeps entries at or after it; zero = all.
	Since time.Time
	// Limit keeps the newest Limit entries; 0 = all.
	Limit int
}

// Entries returns the kept entries f selects, oldest first, and how many
// were ever kept (to tell how many the ring has forgotten).
func (r *Ring) Entries(f Filter) ([]Entry, uint64) {
	r.mu.Lock()
	all := make([]Entry, 0, len(r.buf))
	if len(r.buf) < cap(r.buf) {
		all = append(all, r.buf...)
	} else {
		all = append(all, r.buf[r.next:]...)
		all = append(all, r.buf[:r.next]...)
	}
	total := r.total
	r.mu.Unlock()
	needle := strings.ToLower(f.Contains)
	out := all[:0]
	for _, e := range all {
		if levelOf(e.Level) < f.MinLevel || (!f.Since.IsZero() && e.Time.Before(f.Since)) {
			continue
		}
		if needle != "" && !e.contains(needle) {
			continue
		}
		out = append(out, e)
	}
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[len(out)-f.Limit:]
	}
	return out, total
}

func (e Entry) contains(needle string) bool {
	if strings.Contains(strings.ToLower(e.Message), needle) {
		return true
	}
	for k, v := range e.Attrs {
		if strings.Contains(strings.ToLower(k), needle) || strings.Contains(strings.ToLower(v), needle) {
			return true
		}
	}
	return false
}

// ParseLevel reads "debug", "info", "warn" or "error" ("" = debug: all).
func ParseLevel(s string) (slog.Level, error) {
	if s == "" {
		return slog.LevelDebug, nil
	}
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func levelOf(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

type handler struct {
	ring   *Ring
	next   slog.Handler
	attrs  []slog.Attr // from WithAttrs, already prefixed with their groups
	groups []string
}

func (h *handler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.ring.level.Level() || (h.next != nil && h.next.Enabled(ctx, l))
}

func (h *handler) Handle(ctx context.Context, rec slog.Record) error {
	if rec.Level >= h.ring.level.Level() {
		e := Entry{Time: rec.Time, Level: rec.Level.String(), Message: clip(rec.Message)}
		if len(h.attrs) > 0 || rec.NumAttrs() > 0 {
			e.Attrs = make(map[string]string, len(h.attrs)+rec.NumAttrs())
			for _, a := range h.attrs {
				flatten(e.Attrs, "", a)
			}
			prefix := strings.Join(h.groups, ".")
			if prefix != "" {
				prefix += "."
			}
			rec.Attrs(func(a slog.Attr) bool {
				flatten(e.Attrs, prefix, a)
				return true
			})
		}
		h.ring.add(e)
	}
	if h.next != nil && h.next.Enabled(ctx, rec.Level) {
		return h.next.Handle(ctx, rec)
	}
	return nil
}

func (h *handler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	prefix := strings.Join(h.groups, ".")
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if prefix != "" {
			a.Key = prefix + "." + a.Key
		}
		c.attrs = append(c.attrs, a)
	}
	if h.next != nil {
		c.next = h.next.WithAttrs(as)
	}
	return &c
}

func (h *handler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.groups = append(append([]string(nil), h.groups...), name)
	if h.next != nil {
		c.next = h.next.WithGroup(name)
	}
	return &c
}

func flatten(m map[string]string, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	if a.Value.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			flatten(m, p, g)
		}
		return
	}
	m[prefix+a.Key] = clip(a.Value.String())
}

func clip(s string) string {
	if len(s) > maxValue {
		return s[:maxValue] + "…"
	}
	return s
}
