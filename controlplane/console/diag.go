package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
)

// Remote diagnostics on the device page: an operator asks the device for
// its status or logs (a diag command through the API, audited there) and
// the page shows the latest answer; support bundles are asked for,
// listed and downloaded through the API's support-bundle routes.

// diagResult is the latest diag answer of one device.
type diagResult struct {
	What   string
	By     string
	At     time.Time
	OK     bool
	Error  string
	Output string // indented JSON
}

// diagResults keeps the latest answer per device, for the page to show
// after its redirect; bounded, the oldest dropped first.
type diagResults struct {
	mu    sync.Mutex
	byDev map[string]diagResult
	order []string
}

const maxDiagResults = 256

func (d *diagResults) put(dev string, r diagResult) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.byDev == nil {
		d.byDev = map[string]diagResult{}
	}
	if _, ok := d.byDev[dev]; !ok {
		d.order = append(d.order, dev)
		if len(d.order) > maxDiagResults {
			delete(d.byDev, d.order[0])
			d.order = d.order[1:]
		}
	}
	d.byDev[dev] = r
}

func (d *diagResults) get(dev string) (diagResult, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	r, ok := d.byDev[dev]
	return r, ok
}

// deviceDiag is POST /devices/{id}/diag/{what}: ask the device, keep the
// answer, show the device page again.
func (c *Console) deviceDiag(w http.ResponseWriter, r *http.Request, u user) {
	id, what := r.PathValue("id"), r.PathValue("what")
	if what != "status" && what != "logs" {
		http.Error(w, "unknown diagnostics", http.StatusNotFound)
		return
	}
	req := api.CommandRequest{Kind: "diag-" + what, Timeout: "20s"}
	if what == "logs" {
		req.Level = r.PostForm.Get("level")
		req.Limit = 200
	}
	rep, err := c.client(u).CommandWith(r.Context(), id, req)
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	res := diagResult{What: what, By: u.Name, At: c.cfg.Now(), OK: rep.OK, Error: rep.Error}
	var buf bytes.Buffer
	if len(rep.Output) > 0 && json.Indent(&buf, rep.Output, "", "  ") == nil {
		res.Output = buf.String()
	}
	c.diag.put(id, res)
	http.Redirect(w, r, "/devices/"+url.PathEscape(id)+"#diagnostics", http.StatusSeeOther)
}

// requestSupport is POST /devices/{id}/support-bundles.
func (c *Console) requestSupport(w http.ResponseWriter, r *http.Request, u user) {
	id := r.PathValue("id")
	if _, err := c.client(u).RequestSupportBundle(r.Context(), id, 0); err != nil {
		c.apiError(w, r, u, err)
		return
	}
	http.Redirect(w, r, "/devices/"+url.PathEscape(id)+"#support", http.StatusSeeOther)
}

// downloadSupport is GET /devices/{id}/support-bundles/{upload}: the
// archive, through the API as the user (operator role, audited there).
func (c *Console) downloadSupport(w http.ResponseWriter, r *http.Request, u user) {
	id, upload := r.PathValue("id"), r.PathValue("upload")
	lw := &lazyDownload{w: w, name: fmt.Sprintf("flotilla-support-%s-%s.tar.gz", id, upload)}
	if _, err := c.client(u).DownloadSupportBundle(r.Context(), id, upload, lw); err != nil {
		if !lw.started {
			c.apiError(w, r, u, err)
			return
		}
		c.log.Warn("support bundle download cut", "device", id, "upload", upload, "err", err)
	}
}

// lazyDownload sets the download's headers at its first byte, so that an
// error before it can still be shown as a page.
type lazyDownload struct {
	w       http.ResponseWriter
	name    string
	started bool
}

func (l *lazyDownload) Write(p []byte) (int, error) {
	if !l.started {
		l.started = true
		h := l.w.Header()
		h.Set("Content-Type", "application/gzip")
		h.Set("Content-Disposition", `attachment; filename="`+l.name+`"`)
		l.w.WriteHeader(http.StatusOK)
	}
	return l.w.Write(p)
}

func init() {
	// size shows a support bundle's int64 sizes as bytes does.
	b := funcs["bytes"].(func(uint64) string)
	funcs["size"] = func(n int64) string { return b(uint64(max(n, 0))) }
}
