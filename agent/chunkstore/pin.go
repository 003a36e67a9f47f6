package chunkstore

import (
	"context"
	"fmt"
	"maps"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/wire"
)

// pinSchema keeps, across restarts, the manifests of downloads that have
// started and not finished: one per key (the installer's key is the model),
// so a newer release of a model replaces the older one's pin.
const pinSchema = `CREATE TABLE IF NOT EXISTS pins (
	key          TEXT    NOT NULL PRIMARY KEY,
	manifest     BLOB    NOT NULL,
	pinned_at_ms INTEGER NOT NULL
)`

// maxPinKey bounds a pin's key (a model name).
const maxPinKey = 256

// Pin records m, under key, as a download in progress that outlives this
// process: until Unpin, every collection keeps its chunks, so a download
// cut short (a failed fetch, a restart) resumes with what it had even when
// another bundle is staged and collects in between. A Pin under a key that
// has one replaces it. Like Hold, Pin before asking Missing.
func (s *Store) Pin(ctx context.Context, key string, m *pb.BundleManifest) error {
	if key == "" || len(key) > maxPinKey {
		return fmt.Errorf("pin: key of %d bytes (1 to %d)", len(key), maxPinKey)
	}
	raw, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return fmt.Errorf("pin %s: %w", key, err)
	}
	if len(raw) > pb.MaxManifestSize {
		return fmt.Errorf("pin %s: manifest of %d bytes, over %d", key, len(raw), pb.MaxManifestSize)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.db.ExecContext(ctx, `INSERT INTO pins (key, manifest, pinned_at_ms) VALUES (?, ?, ?)
		ON CONFLICT (key) DO UPDATE SET manifest = excluded.manifest, pinned_at_ms = excluded.pinned_at_ms`,
		key, raw, time.Now().UnixMilli()); err != nil {
		return fmt.Errorf("pin %s: %w", key, err)
	}
	s.pins[key] = m
	return nil
}

// Unpin drops key's pin (none: nothing to do). Its chunks stay until a
// collection finds nothing else naming them.
func (s *Store) Unpin(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pins[key]; !ok {
		return nil
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM pins WHERE key = ?`, key); err != nil {
		return fmt.Errorf("unpin %s: %w", key, err)
	}
	delete(s.pins, key)
	return nil
}

// Pins returns the pinned manifests by key.
func (s *Store) Pins() map[string]*pb.BundleManifest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.pins)
}

// loadPins reads the pins into memory. A row whose manifest does not
// decode (a damaged index) is dropped: the pin only spares a download from
// fetching again, so losing one costs bandwidth, never a wrong chunk.
func (s *Store) loadPins(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, pinSchema); err != nil {
		return err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT key, manifest FROM pins`)
	if err != nil {
		return err
	}
	var bad []string
	for rows.Next() {
		var key string
		var raw []byte
		if err := rows.Scan(&key, &raw); err != nil {
			rows.Close()
			return err
		}
		m := new(pb.BundleManifest)
		if err := wire.Decode(raw, pb.MaxManifestSize, m); err != nil {
			bad = append(bad, key)
			continue
		}
		s.pins[key] = m
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, key := range bad {
		if _, err := s.db.ExecContext(ctx, `DELETE FROM pins WHERE key = ?`, key); err != nil {
			return err
		}
	}
	return nil
}
