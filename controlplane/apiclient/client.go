// Package apiclient is a typed Go client of the control plane's REST API,
// used by flotctl and by tests that drive the server as an operator would.
package apiclient

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
)

// Client calls one control plane with one API token.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client of the API at base (https://host:port) that
// authenticates with token and uses hc (nil: http.DefaultClient).
func New(base, token string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(base, "/"), token: token, http: hc}
}

// Error is an error answer from the API.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status)
}

// StatusOf returns the HTTP status of an API error, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// maxResponse caps what the client reads of one answer.
const maxResponse = 64 << 20

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return c.send(req, out)
}

func (c *Client) send(req *http.Request, out any) error {
	method, path := req.Method, req.URL.Path
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return fmt.Errorf("read answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e api.MissingChunks
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		ae := &Error{Status: resp.StatusCode, Message: e.Error}
		if resp.StatusCode == http.StatusConflict && len(e.Missing) > 0 {
			return &MissingError{Status: ae.Status, Message: ae.Message, Missing: e.Missing}
		}
		return ae
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("decode answer of %s %s: %w", method, path, err)
		}
	}
	return nil
}

// WhoAmI describes the client's token.
func (c *Client) WhoAmI(ctx context.Context) (api.WhoAmI, error) {
	var out api.WhoAmI
	return out, c.do(ctx, "GET", "/v1/whoami", nil, &out)
}

// ListOptions filter ListDevices.
type ListOptions struct {
	Selector       string // k=v,k2=v2
	Online         *bool
	Decommissioned bool
	Limit          int
}

// ListDevices returns every device matching opts, following pages.
func (c *Client) ListDevices(ctx context.Context, opts ListOptions) ([]api.DeviceView, error) {
	var all []api.DeviceView
	after := ""
	for {
		q := url.Values{}
		if opts.Selector != "" {
			q.Set("selector", opts.Selector)
		}
		if opts.Online != nil {
			q.Set("online", fmt.Sprint(*opts.Online))
		}
		if opts.Decommissioned {
			q.Set("decommissioned", "true")
		}
		if opts.Limit > 0 {
			q.Set("limit", fmt.Sprint(opts.Limit))
		}
		if after != "" {
			q.Set("after", after)
		}
		var page api.DeviceList
		if err := c.do(ctx, "GET", "/v1/devices?"+q.Encode(), nil, &page); err != nil {
			return nil, err
		}
		all = append(all, page.Devices...)
		if page.Next == "" || (opts.Limit > 0 && len(all) >= opts.Limit) {
			return all, nil
		}
		after = page.Next
	}
}

// Device returns one device.
func (c *Client) Device(ctx context.Context, id string) (api.DeviceView, error) {
	var out api.DeviceView
	return out, c.do(ctx, "GET", "/v1/devices/"+url.PathEscape(id), nil, &out)
}

// Label sets and removes labels of a device.
func (c *Client) Label(ctx context.Context, id string, set map[string]string, remove []string) (api.DeviceView, error) {
	var out api.DeviceView
	return out, c.do(ctx, "PATCH", "/v1/devices/"+url.PathEscape(id)+"/labels", api.LabelPatch{Set: set, Remove: remove}, &out)
}

// Decommission revokes a device.
func (c *Client) Decommission(ctx context.Context, id string) (api.DeviceView, error) {
	var out api.DeviceView
	return out, c.do(ctx, "POST", "/v1/devices/"+url.PathEscape(id)+"/decommission", nil, &out)
}

// Command sends ping or resync to a device and waits for its answer.
func (c *Client) Command(ctx context.Context, id, kind, timeout string) (api.CommandResponse, error) {
	var out api.CommandResponse
	return out, c.do(ctx, "POST", "/v1/devices/"+url.PathEscape(id)+"/commands", api.CommandRequest{Kind: kind, Timeout: timeout}, &out)
}

// CommandWith sends a command with its arguments (diag-logs' filters).
func (c *Client) CommandWith(ctx context.Context, id string, req api.CommandRequest) (api.CommandResponse, error) {
	var out api.CommandResponse
	return out, c.do(ctx, "POST", "/v1/devices/"+url.PathEscape(id)+"/commands", req, &out)
}

// CreateEnrolToken creates a bootstrap token.
func (c *Client) CreateEnrolToken(ctx context.Context, req api.EnrolTokenRequest) (api.EnrolTokenCreated, error) {
	var out api.EnrolTokenCreated
	return out, c.do(ctx, "POST", "/v1/enrol-tokens", req, &out)
}

// ListEnrolTokens lists bootstrap tokens.
func (c *Client) ListEnrolTokens(ctx context.Context) ([]api.EnrolTokenView, error) {
	var out []api.EnrolTokenView
	return out, c.do(ctx, "GET", "/v1/enrol-tokens", nil, &out)
}

// RevokeEnrolToken revokes a bootstrap token.
func (c *Client) RevokeEnrolToken(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/enrol-tokens/"+url.PathEscape(id), nil, nil)
}

// CreateAPIToken creates an API token.
func (c *Client) CreateAPIToken(ctx context.Context, req api.APITokenRequest) (api.APITokenCreated, error) {
	var out api.APITokenCreated
	return out, c.do(ctx, "POST", "/v1/tokens", req, &out)
}

// ListAPITokens lists API tokens.
func (c *Client) ListAPITokens(ctx context.Context) ([]api.APITokenView, error) {
	var out []api.APITokenView
	return out, c.do(ctx, "GET", "/v1/tokens", nil, &out)
}

// RevokeAPIToken revokes an API token.
func (c *Client) RevokeAPIToken(ctx context.Context, id string) error {
	return c.do(ctx, "DELETE", "/v1/tokens/"+url.PathEscape(id), nil, nil)
}

// Audit returns the newest audit entries.
func (c *Client) Audit(ctx context.Context, limit int) ([]api.AuditView, error) {
	var out []api.AuditView
	return out, c.do(ctx, "GET", fmt.Sprintf("/v1/audit?limit=%d", limit), nil, &out)
}

// PushRelease uploads the release repository's offline-signed metadata.
func (c *Client) PushRelease(ctx context.Context, files map[string][]byte) (api.ReleaseView, error) {
	var out api.ReleaseView
	return out, c.do(ctx, "PUT", "/v1/releases/metadata", api.ReleasePush{Metadata: files}, &out)
}

// PutChunk uploads one bundle chunk.
func (c *Client) PutChunk(ctx context.Context, sum [32]byte, data []byte) error {
	return c.doRaw(ctx, "PUT", "/v1/bundles/chunks/"+hex.EncodeToString(sum[:]), data, nil)
}

// PushBundle uploads a manifest. When chunks are missing the error is a
// *MissingError listing them.
func (c *Client) PushBundle(ctx context.Context, manifest []byte) (api.BundleView, error) {
	var out api.BundleView
	return out, c.doRaw(ctx, "POST", "/v1/bundles", manifest, &out)
}

// MissingError is PushBundle's answer when chunks are not uploaded yet.
type MissingError struct {
	Status  int
	Message string
	Missing []string // hex SHA-256
}

func (e *MissingError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// Assign assigns a released model to a device.
func (c *Client) Assign(ctx context.Context, device, model string, release uint64) (api.AssignmentView, error) {
	var out api.AssignmentView
	return out, c.do(ctx, "POST", "/v1/devices/"+url.PathEscape(device)+"/assign", api.AssignRequest{Model: model, Release: release}, &out)
}

// Progress returns a device's latest fetch progress per bundle.
func (c *Client) Progress(ctx context.Context, device string) ([]api.ProgressView, error) {
	var out []api.ProgressView
	return out, c.do(ctx, "GET", "/v1/devices/"+url.PathEscape(device)+"/progress", nil, &out)
}

// DriftOptions select a drift report: one model (empty: every model with
// telemetry in range) and release (0: all), of one device, a cohort
// (Selector, k=v,k2=v2) or the fleet, over the last Since (0: the server's
// default, 1h) or [From, To).
type DriftOptions struct {
	Model    string
	Release  uint64
	Device   string
	Selector string
	Since    time.Duration
	From, To time.Time
}

// Drift returns the merged telemetry and drift of the model releases
// matching o.
func (c *Client) Drift(ctx context.Context, o DriftOptions) (api.DriftReport, error) {
	q := url.Values{}
	for k, v := range map[string]string{"model": o.Model, "device": o.Device, "selector": o.Selector} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if o.Release > 0 {
		q.Set("release", fmt.Sprint(o.Release))
	}
	setRange(q, o.Since, o.From, o.To)
	var out api.DriftReport
	return out, c.do(ctx, "GET", "/v1/drift?"+q.Encode(), nil, &out)
}

// EventOptions select a device's events: at the levels given (none: all),
// over the last Since or [From, To) (all zero: every event kept), at most
// Limit (0: the server's default, 100), newest first.
type EventOptions struct {
	Levels   []string
	Since    time.Duration
	From, To time.Time
	Limit    int
}

// DeviceEvents returns a device's events.
func (c *Client) DeviceEvents(ctx context.Context, id string, o EventOptions) ([]api.EventView, error) {
	q := url.Values{}
	if len(o.Levels) > 0 {
		q.Set("level", strings.Join(o.Levels, ","))
	}
	if o.Limit > 0 {
		q.Set("limit", fmt.Sprint(o.Limit))
	}
	setRange(q, o.Since, o.From, o.To)
	var out []api.EventView
	return out, c.do(ctx, "GET", "/v1/devices/"+url.PathEscape(id)+"/events?"+q.Encode(), nil, &out)
}

func setRange(q url.Values, since time.Duration, from, to time.Time) {
	if since > 0 {
		q.Set("since", since.String())
	}
	if !from.IsZero() {
		q.Set("from", from.UTC().Format(time.RFC3339Nano))
	}
	if !to.IsZero() {
		q.Set("to", to.UTC().Format(time.RFC3339Nano))
	}
}

// doRaw sends raw bytes as application/octet-stream.
func (c *Client) doRaw(ctx context.Context, method, path string, body []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	return c.send(req, out)
}

// CreateRollout creates a staged rollout from its spec (YAML or JSON).
func (c *Client) CreateRollout(ctx context.Context, spec []byte) (api.RolloutView, error) {
	var out api.RolloutView
	return out, c.doRaw(ctx, "POST", "/v1/rollouts", spec, &out)
}

// ListRollouts lists rollouts, newest first: of one model and in one phase
// when set, at most limit (0: the server's default).
func (c *Client) ListRollouts(ctx context.Context, model, phase string, limit int) ([]api.RolloutView, error) {
	q := url.Values{}
	if model != "" {
		q.Set("model", model)
	}
	if phase != "" {
		q.Set("phase", phase)
	}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	var out []api.RolloutView
	return out, c.do(ctx, "GET", "/v1/rollouts?"+q.Encode(), nil, &out)
}

// Rollout returns one rollout with its gate evaluations; withDevices lists
// each device's state too.
func (c *Client) Rollout(ctx context.Context, id string, withDevices bool) (api.RolloutView, error) {
	var out api.RolloutView
	p := "/v1/rollouts/" + url.PathEscape(id)
	if withDevices {
		p += "?devices=true"
	}
	return out, c.do(ctx, "GET", p, nil, &out)
}

// RolloutAction pauses, resumes, promotes or aborts a rollout, with the
// reason recorded in the audit log.
func (c *Client) RolloutAction(ctx context.Context, id, action, reason string) (api.RolloutView, error) {
	var out api.RolloutView
	return out, c.do(ctx, "POST", "/v1/rollouts/"+url.PathEscape(id)+"/"+url.PathEscape(action), api.RolloutAction{Reason: reason}, &out)
}

// RolloutAudit returns a rollout's audit trail, newest first.
func (c *Client) RolloutAudit(ctx context.Context, id string, limit int) ([]api.AuditView, error) {
	p := "/v1/rollouts/" + url.PathEscape(id) + "/audit"
	if limit > 0 {
		p += "?limit=" + fmt.Sprint(limit)
	}
	var out []api.AuditView
	return out, c.do(ctx, "GET", p, nil, &out)
}

// ListUsers returns the console users (admin).
func (c *Client) ListUsers(ctx context.Context) ([]api.UserView, error) {
	var out []api.UserView
	return out, c.do(ctx, "GET", "/v1/users", nil, &out)
}

// CreateUser creates a console user (admin).
func (c *Client) CreateUser(ctx context.Context, req api.UserRequest) (api.UserView, error) {
	var out api.UserView
	return out, c.do(ctx, "POST", "/v1/users", req, &out)
}

// UpdateUser changes a console user's role or password (admin).
func (c *Client) UpdateUser(ctx context.Context, name string, p api.UserPatch) (api.UserView, error) {
	var out api.UserView
	return out, c.do(ctx, "PATCH", "/v1/users/"+url.PathEscape(name), p, &out)
}

// DisableUser disables a console user and ends its sessions (admin).
func (c *Client) DisableUser(ctx context.Context, name string) error {
	return c.do(ctx, "DELETE", "/v1/users/"+url.PathEscape(name), nil, nil)
}

// ListBundles returns the released bundles and the release metadata's
// signatures.
func (c *Client) ListBundles(ctx context.Context) (api.BundleList, error) {
	var out api.BundleList
	return out, c.do(ctx, "GET", "/v1/bundles", nil, &out)
}

// DeviceModels returns a device's models as it last reported them.
func (c *Client) DeviceModels(ctx context.Context, id string) ([]api.ModelView, error) {
	var out []api.ModelView
	return out, c.do(ctx, "GET", "/v1/devices/"+url.PathEscape(id)+"/models", nil, &out)
}

// FleetModels returns the devices running each release of each model.
func (c *Client) FleetModels(ctx context.Context) ([]api.ModelVersionView, error) {
	var out []api.ModelVersionView
	return out, c.do(ctx, "GET", "/v1/models", nil, &out)
}
