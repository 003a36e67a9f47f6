package api

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

// Bundles is what the API asks of the control plane's bundle trust and
// delivery: the release repository, the bundle store, assignments and the
// devices' fetch progress. Errors wrap registry's sentinels (ErrInvalid,
// ErrNotFound, ErrConflict, ErrUnavailable) for their status, or are a
// *MissingChunksError.
type Bundles interface {
	PushRelease(ctx context.Context, actor string, files map[string][]byte) (ReleaseView, error)
	PutChunk(ctx context.Context, sum [32]byte, data []byte) error
	PushBundle(ctx context.Context, actor string, manifest []byte) (BundleView, error)
	Assign(ctx context.Context, actor, device, model string, release uint64) (AssignmentView, error)
	Progress(ctx context.Context, device string) ([]ProgressView, error)
}

// MissingChunksError refuses a manifest whose chunks the store lacks; the
// client uploads them and pushes the manifest again.
type MissingChunksError struct {
	Missing []string // hex SHA-256 of each missing chunk
}

func (e *MissingChunksError) Error() string {
	return fmt.Sprintf("%d chunks of the bundle are not uploaded yet", len(e.Missing))
}

// Bodies of the bundle routes. Raw bodies (a chunk, a manifest) cap at
// maxChunkBody and maxManifestBody.
const (
	maxChunkBody    = pb.MaxChunkSize
	maxManifestBody = 4 << 20
	maxReleaseBody  = 8 << 20
)

func (a *API) bundles(w http.ResponseWriter) (Bundles, bool) {
	if a.cfg.Bundles == nil {
		writeError(w, http.StatusServiceUnavailable, "bundle delivery is not configured on this server")
		return nil, false
	}
	return a.cfg.Bundles, true
}

func (a *API) pushRelease(w http.ResponseWriter, r *http.Request) {
	b, ok := a.bundles(w)
	if !ok {
		return
	}
	var req ReleasePush
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	v, err := b.PushRelease(r.Context(), callerFrom(r.Context()).Actor(), req.Metadata)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// readRaw reads a raw body of at most limit bytes.
func readRaw(r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, fmt.Errorf("request body over %d bytes", limit)
		}
		return nil, fmt.Errorf("request body: %w", err)
	}
	if len(body) == 0 {
		return nil, errors.New("request body is empty")
	}
	return body, nil
}

func (a *API) putChunk(w http.ResponseWriter, r *http.Request) {
	b, ok := a.bundles(w)
	if !ok {
		return
	}
	raw, err := hex.DecodeString(r.PathValue("sha256"))
	if err != nil || len(raw) != 32 || hex.EncodeToString(raw) != r.PathValue("sha256") {
		writeError(w, http.StatusBadRequest, "chunk name must be its SHA-256 in lowercase hex")
		return
	}
	data, err := readRaw(r, maxChunkBody)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := b.PutChunk(r.Context(), [32]byte(raw), data); err != nil {
		a.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) pushBundle(w http.ResponseWriter, r *http.Request) {
	b, ok := a.bundles(w)
	if !ok {
		return
	}
	data, err := readRaw(r, maxManifestBody)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	v, err := b.PushBundle(r.Context(), callerFrom(r.Context()).Actor(), data)
	var missing *MissingChunksError
	if errors.As(err, &missing) {
		writeJSON(w, http.StatusConflict, MissingChunks{Error: missing.Error(), Missing: missing.Missing})
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *API) assign(w http.ResponseWriter, r *http.Request) {
	b, ok := a.bundles(w)
	if !ok {
		return
	}
	var req AssignRequest
	if err := decode(r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	v, err := b.Assign(r.Context(), callerFrom(r.Context()).Actor(), r.PathValue("id"), req.Model, req.Release)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func (a *API) progress(w http.ResponseWriter, r *http.Request) {
	b, ok := a.bundles(w)
	if !ok {
		return
	}
	v, err := b.Progress(r.Context(), r.PathValue("id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if v == nil {
		v = []ProgressView{}
	}
	writeJSON(w, http.StatusOK, v)
}
