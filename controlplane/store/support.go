package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
)

// Limits of stored support uploads.
const (
	// MaxSupportChunkBytes bounds one stored chunk (the wire's limit).
	MaxSupportChunkBytes = 256 << 10
	// MaxSupportSignatureBytes bounds a stored detached signature.
	MaxSupportSignatureBytes = 64 << 10
	// MaxSupportUploadIDLen bounds an upload's ID.
	MaxSupportUploadIDLen = 128
	maxSupportText        = 4 << 10 // error, requested_by, verified, sha256
	maxSupportListed      = 1000
)

// SupportUpload is one support-bundle upload's state (the fields of
// controlplane/supportbundle's Info; times in milliseconds). Signature is
// the device's detached signature once the last chunk brought it.
type SupportUpload struct {
	DeviceID, ID   string
	State, Error   string
	RequestedBy    string
	RequestedAt    int64
	UpdatedAt      int64
	Size, Received int64
	SHA256         string
	Chunks, Next   uint32
	ChunkSize      int64
	Verified       string
	Signature      []byte
}

// SupportEdit is what an UpdateSupportUpload callback decided: Save
// writes the upload back; Chunk, when set, is stored as chunk Index;
// DropChunks deletes the upload's chunks (a failed upload). The zero
// value changes nothing.
type SupportEdit struct {
	Save       bool
	Chunk      []byte
	Index      uint32
	DropChunks bool
}

func validSupport(u *SupportUpload) error {
	if err := ValidateDeviceID(u.DeviceID); err != nil {
		return err
	}
	if !validName(u.ID, MaxSupportUploadIDLen) {
		return fmt.Errorf("%w support upload id %q", ErrInvalid, u.ID)
	}
	if u.State == "" || len(u.State) > 32 || len(u.Error) > maxSupportText || len(u.RequestedBy) > maxSupportText ||
		len(u.Verified) > maxSupportText || len(u.SHA256) > 64 || len(u.Signature) > MaxSupportSignatureBytes ||
		u.Size < 0 || u.Received < 0 || u.ChunkSize < 0 || u.Next > u.Chunks && u.Chunks > 0 {
		return fmt.Errorf("%w support upload %s/%s: field out of range", ErrInvalid, u.DeviceID, u.ID)
	}
	return nil
}

const supportColumns = `device_id, id, state, error, requested_by, requested_at, updated_at, size, received, sha256,
	chunks, next, chunk_size, verified, signature`

func scanSupport(r rowScanner) (SupportUpload, error) {
	var u SupportUpload
	var chunks, next int64
	err := r.Scan(&u.DeviceID, &u.ID, &u.State, &u.Error, &u.RequestedBy, &u.RequestedAt, &u.UpdatedAt, &u.Size, &u.Received,
		&u.SHA256, &chunks, &next, &u.ChunkSize, &u.Verified, &u.Signature)
	u.Chunks, u.Next = uint32(chunks), uint32(next)
	return u, err
}

func supportArgs(u *SupportUpload) []any {
	return []any{u.State, u.Error, u.RequestedBy, u.RequestedAt, u.UpdatedAt, u.Size, u.Received, u.SHA256,
		int64(u.Chunks), int64(u.Next), u.ChunkSize, u.Verified, nullBytes(u.Signature), u.DeviceID, u.ID}
}

// CreateSupportUpload records a new upload; ErrConflict if its device
// already has one of that ID.
func (s *Store) CreateSupportUpload(ctx context.Context, u SupportUpload) error {
	return s.ImportSupportUpload(ctx, u, nil)
}

// ImportSupportUpload records an upload with its chunks, which next
// returns in order until io.EOF (nil: none), all in one transaction:
// either all of it is stored or nothing. ErrConflict if the upload exists.
func (s *Store) ImportSupportUpload(ctx context.Context, u SupportUpload, next func() ([]byte, error)) error {
	if err := validSupport(&u); err != nil {
		return fmt.Errorf("create support upload: %w", err)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO support_uploads (state, error, requested_by, requested_at, updated_at,
			size, received, sha256, chunks, next, chunk_size, verified, signature, device_id, id)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`), supportArgs(&u)...); err != nil {
			if s.d.uniqueViolation(err) {
				return fmt.Errorf("%w: support upload %s/%s", ErrConflict, u.DeviceID, u.ID)
			}
			return err
		}
		for i := 0; next != nil; i++ {
			b, err := next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return err
			}
			if len(b) > MaxSupportChunkBytes {
				return fmt.Errorf("%w: chunk %d of %d bytes", ErrInvalid, i, len(b))
			}
			if err := s.putSupportChunk(ctx, tx, u.DeviceID, u.ID, uint32(i), b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create support upload: %w", err)
	}
	return nil
}

func (s *Store) putSupportChunk(ctx context.Context, tx *sql.Tx, dev, id string, index uint32, data []byte) error {
	_, err := tx.ExecContext(ctx, s.q(`INSERT INTO support_chunks (device_id, upload_id, idx, data) VALUES (?, ?, ?, ?)`),
		dev, id, int64(index), data)
	if err != nil && s.d.uniqueViolation(err) {
		return fmt.Errorf("%w: chunk %d of support upload %s/%s", ErrConflict, index, dev, id)
	}
	return err
}

// SupportUpload returns one upload; ErrNotFound if there is none.
func (s *Store) SupportUpload(ctx context.Context, dev, id string) (SupportUpload, error) {
	u, err := scanSupport(s.rdb.QueryRowContext(ctx, s.q(`SELECT `+supportColumns+` FROM support_uploads
		WHERE device_id = ? AND id = ?`), dev, id))
	if errors.Is(err, sql.ErrNoRows) {
		return u, fmt.Errorf("support upload %s/%s: %w", dev, id, ErrNotFound)
	}
	if err != nil {
		return u, fmt.Errorf("support upload: %w", err)
	}
	return u, nil
}

// SupportUploads returns a device's uploads, newest first (at most 1000).
func (s *Store) SupportUploads(ctx context.Context, dev string) ([]SupportUpload, error) {
	return s.listSupport(ctx, `WHERE device_id = ? ORDER BY requested_at DESC, id DESC LIMIT ?`, dev, maxSupportListed)
}

// StaleSupportUploads returns uploads in state whose last change is
// before before (milliseconds), oldest first, at most limit (0: 1000).
func (s *Store) StaleSupportUploads(ctx context.Context, state string, before int64, limit int) ([]SupportUpload, error) {
	if limit <= 0 || limit > maxSupportListed {
		limit = maxSupportListed
	}
	return s.listSupport(ctx, `WHERE state = ? AND updated_at < ? ORDER BY updated_at LIMIT ?`, state, before, limit)
}

func (s *Store) listSupport(ctx context.Context, where string, args ...any) ([]SupportUpload, error) {
	rows, err := s.rdb.QueryContext(ctx, s.q(`SELECT `+supportColumns+` FROM support_uploads `+where), args...)
	if err != nil {
		return nil, fmt.Errorf("support uploads: %w", err)
	}
	defer rows.Close()
	out := []SupportUpload{}
	for rows.Next() {
		u, err := scanSupport(rows)
		if err != nil {
			return nil, fmt.Errorf("support uploads: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("support uploads: %w", err)
	}
	return out, nil
}

// UpdateSupportUpload reads an upload under a row lock (FOR UPDATE on
// PostgreSQL; SQLite's writer holds its lock already), lets fn decide
// and applies what it decided, all in one transaction: two processes
// handling the same upload take turns, each seeing the other's change.
// fn must not use the store. An error from fn rolls back and is returned
// as it is; ErrNotFound if there is no such upload. It returns the upload
// as fn left it.
func (s *Store) UpdateSupportUpload(ctx context.Context, dev, id string, fn func(u *SupportUpload) (SupportEdit, error)) (SupportUpload, error) {
	var u SupportUpload
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		u, err = scanSupport(tx.QueryRowContext(ctx, s.q(`SELECT `+supportColumns+` FROM support_uploads
			WHERE device_id = ? AND id = ?`+s.d.forUpdate), dev, id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("support upload %s/%s: %w", dev, id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		e, err := fn(&u)
		if err != nil {
			return err
		}
		u.DeviceID, u.ID = dev, id
		if e.Save {
			if err := validSupport(&u); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, s.q(`UPDATE support_uploads SET state = ?, error = ?, requested_by = ?,
				requested_at = ?, updated_at = ?, size = ?, received = ?, sha256 = ?, chunks = ?, next = ?, chunk_size = ?,
				verified = ?, signature = ? WHERE device_id = ? AND id = ?`), supportArgs(&u)...); err != nil {
				return err
			}
		}
		if e.DropChunks {
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM support_chunks WHERE device_id = ? AND upload_id = ?`), dev, id); err != nil {
				return err
			}
		}
		if e.Chunk != nil {
			if len(e.Chunk) > MaxSupportChunkBytes {
				return fmt.Errorf("%w: chunk of %d bytes", ErrInvalid, len(e.Chunk))
			}
			return s.putSupportChunk(ctx, tx, dev, id, e.Index, e.Chunk)
		}
		return nil
	})
	return u, err
}

// SupportChunk returns one stored chunk; ErrNotFound if there is none.
func (s *Store) SupportChunk(ctx context.Context, dev, id string, index uint32) ([]byte, error) {
	var b []byte
	err := s.rdb.QueryRowContext(ctx, s.q(`SELECT data FROM support_chunks WHERE device_id = ? AND upload_id = ? AND idx = ?`),
		dev, id, int64(index)).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("support chunk %s/%s/%d: %w", dev, id, index, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("support chunk: %w", err)
	}
	return b, nil
}

// PruneSupportUploads deletes, with their chunks, a device's finished
// uploads (any state but uploading) past the newest keep, and returns how
// many went. The caller prunes after a newer upload finished, so what
// goes is older than what stays.
func (s *Store) PruneSupportUploads(ctx context.Context, dev string, keep int) (int, error) {
	n := 0
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, s.q(`SELECT id FROM support_uploads WHERE device_id = ? AND state <> 'uploading'
			ORDER BY requested_at DESC, id DESC`), dev)
		if err != nil {
			return err
		}
		var old []string
		for i := 0; rows.Next(); i++ {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			if i >= keep {
				old = append(old, id)
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, id := range old {
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM support_chunks WHERE device_id = ? AND upload_id = ?`), dev, id); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM support_uploads WHERE device_id = ? AND id = ?`), dev, id); err != nil {
				return err
			}
		}
		n = len(old)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune support uploads: %w", err)
	}
	return n, nil
}
