package supportbundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/flotilla-edge/flotilla/controlplane/store"
	"github.com/flotilla-edge/flotilla/proto/supportsig"
	"github.com/flotilla-edge/flotilla/proto/topic"
)

// maxInfo caps an Info file read back from an earlier release's folder.
const maxInfo = 64 << 10

// importDir takes into the store what an earlier release kept in dir:
// for each device folder, each upload's Info (ID.json) and its data, the
// bundle (ID.tar.gz, with ID.tar.gz.sig) of a ready one or the chunks an
// unfinished one had taken (ID.part), which its device then continues.
// Once every upload is in the store (or was already), dir is renamed
// dir.imported and left for the operator to delete; if any could not be
// stored, dir stays and the next start tries again. Nothing in dir is
// trusted more than a device's chunks: an upload whose files disagree with
// its Info is left out (and stays in the renamed folder).
func (s *Service) importDir(ctx context.Context, dir string) {
	devs, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		s.log.Warn("support folder not imported", "dir", dir, "err", err)
		return
	}
	imported, skipped, failed := 0, 0, 0
	for _, d := range devs {
		if !d.IsDir() || topic.ValidID(d.Name()) != nil {
			continue
		}
		es, err := os.ReadDir(filepath.Join(dir, d.Name()))
		if err != nil {
			failed++
			continue
		}
		for _, e := range es {
			id, ok := strings.CutSuffix(e.Name(), ".json")
			if !ok || e.IsDir() || topic.ValidID(id) != nil {
				continue
			}
			switch err := s.importOne(ctx, filepath.Join(dir, d.Name()), d.Name(), id); {
			case err == nil, errors.Is(err, store.ErrConflict):
				imported++
			case errors.Is(err, errSkip):
				skipped++
				s.log.Warn("support upload not imported", "device", d.Name(), "upload", id, "err", err)
			default:
				failed++
				s.log.Error("support upload not imported; trying again at the next start", "device", d.Name(), "upload", id, "err", err)
			}
		}
	}
	if failed > 0 {
		return
	}
	if err := os.Rename(dir, dir+".imported"); err != nil {
		s.log.Warn("support folder imported but not renamed", "dir", dir, "err", err)
		return
	}
	s.log.Info("support folder imported into the database", "uploads", imported, "left_out", skipped, "kept_in", dir+".imported")
}

// errSkip marks an upload in the folder that cannot be imported as it is.
var errSkip = errors.New("inconsistent files")

func (s *Service) importOne(ctx context.Context, devDir, dev, id string) error {
	f, err := os.Open(filepath.Join(devDir, id+".json"))
	if err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxInfo))
	f.Close()
	if err != nil {
		return err
	}
	var in Info
	if err := json.Unmarshal(b, &in); err != nil || in.ID != id || in.DeviceID != dev {
		return fmt.Errorf("%w: damaged record", errSkip)
	}
	u := store.SupportUpload{DeviceID: dev, ID: id, State: in.State, Error: in.Error, RequestedBy: in.RequestedBy,
		RequestedAt: in.RequestedAt.UnixMilli(), UpdatedAt: in.UpdatedAt.UnixMilli(), Size: in.Size, Received: in.Received,
		SHA256: in.SHA256, Chunks: in.Chunks, Next: in.Next, ChunkSize: in.ChunkSize, Verified: in.Verified}
	if u.ChunkSize < 0 || u.ChunkSize > store.MaxSupportChunkBytes || u.Size < 0 || u.Size > s.cfg.MaxSize ||
		u.Chunks > 0 && u.ChunkSize == 0 && u.Size > 0 {
		return fmt.Errorf("%w: sizes out of range", errSkip)
	}
	var data string
	var n uint32 // chunks to import
	switch in.State {
	case StateReady:
		sig, err := os.ReadFile(filepath.Join(devDir, id+".tar.gz.sig"))
		if err != nil {
			return fmt.Errorf("%w: %w", errSkip, err)
		}
		if _, err := supportsig.Parse(sig); err != nil {
			return fmt.Errorf("%w: %w", errSkip, err)
		}
		u.Signature, data, n = sig, filepath.Join(devDir, id+".tar.gz"), in.Chunks
		if st, err := os.Stat(data); err != nil || st.Size() != u.Size {
			return fmt.Errorf("%w: the bundle is not %d bytes", errSkip, u.Size)
		}
	case StateUploading:
		// The chunks taken stay taken; the last one again (it carries
		// the signature) if the process stopped while verifying.
		data, n = filepath.Join(devDir, id+".part"), min(in.Next, max(in.Chunks, 1)-1)
		if st, err := os.Stat(data); err != nil || st.Size() < int64(n)*u.ChunkSize {
			n = 0
		}
		if n == 0 && in.Next > 0 {
			u.Chunks, u.Size, u.SHA256, u.ChunkSize = 0, 0, "", 0 // start over
		}
		u.Next, u.Received = n, int64(n)*u.ChunkSize
	default:
		n = 0
	}
	if n == 0 {
		return s.st.CreateSupportUpload(ctx, u)
	}
	df, err := os.Open(data)
	if err != nil {
		return fmt.Errorf("%w: %w", errSkip, err)
	}
	defer df.Close()
	left, i := u.Size, uint32(0)
	if u.State == StateUploading {
		left = u.Received
	}
	return s.st.ImportSupportUpload(ctx, u, func() ([]byte, error) {
		if i == n {
			return nil, io.EOF
		}
		b := make([]byte, min(u.ChunkSize, left))
		if u.Chunks == 1 {
			b = make([]byte, left)
		}
		if _, err := io.ReadFull(df, b); err != nil {
			return nil, fmt.Errorf("%w: %w", errSkip, err)
		}
		i, left = i+1, left-int64(len(b))
		return b, nil
	})
}
