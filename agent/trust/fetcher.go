package trust

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"
)

// baseURL is the pretend remote the updater asks; memFetcher serves it.
const baseURL = "mqtt://metadata"

// memFetcher serves one repository's metadata as it arrived over MQTT.
// Root version v is "<v>.root.json", or "root.json" when that file is
// version v; other roles ignore the consistent-snapshot version prefix
// (go-tuf checks versions against the snapshot and timestamp). Absent
// files answer ErrDownloadHTTP 404, the only error that ends go-tuf's root
// rotation walk. It remembers the last file served, to explain a refusal.
type memFetcher struct {
	files    map[string][]byte
	limits   Limits
	lastName string
	lastData []byte
}

func newMemFetcher(files map[string][]byte, l Limits) *memFetcher {
	return &memFetcher{files: files, limits: l}
}

// DownloadFile implements go-tuf's fetcher.Fetcher. The timeout is unused:
// the bytes are already here.
func (f *memFetcher) DownloadFile(urlPath string, maxLength int64, _ time.Duration) ([]byte, error) {
	name, ok := strings.CutPrefix(urlPath, baseURL+"/")
	if !ok {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: http.StatusNotFound, URL: urlPath}
	}
	b, key := f.lookup(name)
	if b == nil {
		return nil, &metadata.ErrDownloadHTTP{StatusCode: http.StatusNotFound, URL: urlPath}
	}
	f.lastName, f.lastData = key, b
	if role, _, _ := roleOf(key); int64(len(b)) > maxLength && int64(len(b)) <= f.limits.of(role) {
		// Within the role's limit but longer than the trusted snapshot or
		// timestamp says: the files do not belong together.
		return nil, &metadata.ErrLengthOrHashMismatch{Msg: fmt.Sprintf("%s is %d bytes, the trusted metadata says %d", key, len(b), maxLength)}
	}
	if int64(len(b)) > maxLength {
		return nil, &metadata.ErrDownloadLengthMismatch{Msg: fmt.Sprintf("%s is %d bytes, limit %d", key, len(b), maxLength)}
	}
	return b, nil
}

func (f *memFetcher) lookup(name string) ([]byte, string) {
	prefix, rest, found := strings.Cut(name, ".")
	if !found {
		return nil, ""
	}
	v, err := strconv.ParseInt(prefix, 10, 64)
	if err != nil {
		return f.files[name], name
	}
	if rest != fileRoot {
		return f.files[rest], rest
	}
	if b, ok := f.files[name]; ok {
		return b, name
	}
	if b, ok := f.files[fileRoot]; ok {
		if e, err := peek(b); err == nil && e.Signed.Version == v {
			return b, fileRoot
		}
	}
	return nil, ""
}
