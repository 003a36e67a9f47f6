package apiclient

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
)

func supportPath(device string) string {
	return "/v1/devices/" + url.PathEscape(device) + "/support-bundles"
}

// RequestSupportBundle asks a device for a support bundle; it returns once
// the device accepted (and started uploading).
func (c *Client) RequestSupportBundle(ctx context.Context, device string, timeout time.Duration) (api.SupportBundleView, error) {
	var out api.SupportBundleView
	p := supportPath(device)
	if timeout > 0 {
		p += "?timeout=" + url.QueryEscape(timeout.String())
	}
	return out, c.do(ctx, "POST", p, nil, &out)
}

// SupportBundles lists a device's support bundles, newest first.
func (c *Client) SupportBundles(ctx context.Context, device string) ([]api.SupportBundleView, error) {
	var out []api.SupportBundleView
	return out, c.do(ctx, "GET", supportPath(device), nil, &out)
}

// SupportBundle returns one support bundle's state, waiting up to wait
// while it is uploading.
func (c *Client) SupportBundle(ctx context.Context, device, id string, wait time.Duration) (api.SupportBundleView, error) {
	var out api.SupportBundleView
	p := supportPath(device) + "/" + url.PathEscape(id)
	if wait > 0 {
		p += "?wait=" + url.QueryEscape(wait.String())
	}
	return out, c.do(ctx, "GET", p, nil, &out)
}

// DownloadSupportBundle writes a ready bundle to w, checking its SHA-256
// against the server's, and returns its detached signature (JSON).
func (c *Client) DownloadSupportBundle(ctx context.Context, device, id string, w io.Writer) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+supportPath(device)+"/"+url.PathEscape(id)+"/bundle", nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		msg := strings.TrimSpace(string(b))
		if i := strings.Index(msg, `"error":"`); i >= 0 {
			msg = strings.TrimSuffix(strings.TrimSuffix(msg[i+9:], "}"), `"`)
		}
		return nil, &Error{Status: resp.StatusCode, Message: msg}
	}
	sig, err := base64.StdEncoding.DecodeString(resp.Header.Get("X-Flotilla-Signature"))
	if err != nil || len(sig) == 0 {
		return nil, fmt.Errorf("support bundle %s: no signature in the answer", id)
	}
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(resp.Body, maxResponse)); err != nil {
		return nil, fmt.Errorf("support bundle %s: %w", id, err)
	}
	if got, want := hex.EncodeToString(h.Sum(nil)), resp.Header.Get("X-Flotilla-Sha256"); got != want {
		return nil, fmt.Errorf("support bundle %s: downloaded SHA-256 %s, the server's %s", id, got, want)
	}
	return sig, nil
}
