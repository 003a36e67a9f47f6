package console

import (
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
)

var funcs = template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		case *time.Time:
			if v == nil || v.IsZero() {
				return "—"
			}
			return v.UTC().Format("2006-01-02 15:04:05 UTC")
		}
		return fmt.Sprint(t)
	},
	"bytes": func(n uint64) string {
		const unit = 1024
		if n < unit {
			return fmt.Sprintf("%d B", n)
		}
		div, exp := uint64(unit), 0
		for m := n / unit; m >= unit; m /= unit {
			div *= unit
			exp++
		}
		return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
	},
	"pct": func(part, whole int) int {
		if whole <= 0 {
			return 0
		}
		return part * 100 / whole
	},
	"list": func(s ...string) []string { return s },
	"short": func(s string) string {
		if len(s) > 12 {
			return s[:12]
		}
		return s
	},
	"f3": func(v float64) string { return strconv.FormatFloat(v, 'g', 3, 64) },
	"labels": func(m map[string]string) string {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = k + "=" + m[k]
		}
		return strings.Join(keys, ", ")
	},
	"labelsInt": func(m map[string]int) string {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for i, k := range keys {
			keys[i] = fmt.Sprintf("%s %d", k, m[k])
		}
		return strings.Join(keys, ", ")
	},
	"svg": func(b []byte) template.HTML { return template.HTML(b) }, // chart escapes every text it draws
}

// maxDevicesShown is the page size of device lists read from the API;
// maxDeviceRows caps the rows the devices page draws (a filter narrows
// the rest).
const (
	maxDevicesShown = 5000
	maxDeviceRows   = 1000
)

// fleet is the overview: devices online and offline, agent versions,
// model releases reporting, and what needs attention.
func (c *Console) fleet(w http.ResponseWriter, r *http.Request, u user) {
	cl := c.client(u)
	ctx := r.Context()
	devs, err := cl.ListDevices(ctx, apiclient.ListOptions{Limit: maxDevicesShown})
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	online := 0
	agents := map[string]int{}
	for _, d := range devs {
		if d.Online {
			online++
		}
		agents[cmpOr(d.AgentVersion, "unknown")]++
	}
	ros, err := cl.ListRollouts(ctx, "", "", 20)
	if err != nil && !unavailable(err) {
		c.apiError(w, r, u, err)
		return
	}
	var alerts []string
	var active []api.RolloutView
	for _, ro := range ros {
		switch ro.Phase {
		case "paused", "rolling_back":
			alerts = append(alerts, fmt.Sprintf("rollout %s (%s release %d) is %s: %s", cmpOr(ro.Name, ro.ID), ro.Model, ro.Release, ro.Phase, ro.Reason))
		}
		if ro.Phase == "running" || ro.Phase == "paused" || ro.Phase == "rolling_back" {
			active = append(active, ro)
		}
	}
	// Model releases with telemetry in the last hour, as the fleet's
	// versions by model; drift alerts among them.
	var releases []api.ReleaseDrift
	if rep, err := cl.Drift(ctx, apiclient.DriftOptions{Since: time.Hour}); err == nil {
		releases = rep.Releases
		for _, rd := range rep.Releases {
			if rd.Alert {
				alerts = append(alerts, fmt.Sprintf("drift alert on %s release %d: JS %.3g, PSI %.3g", rd.Model, rd.Release, rd.Max.JS, rd.Max.PSI))
			}
		}
	} else if apiclient.StatusOf(err) != http.StatusServiceUnavailable {
		c.log.Warn("fleet page: drift not read", "err", err)
	}
	versions, err := cl.FleetModels(ctx)
	if err != nil && !unavailable(err) {
		c.apiError(w, r, u, err)
		return
	}
	c.render(w, r, http.StatusOK, "fleet", u, map[string]any{
		"Total": len(devs), "Online": online, "Offline": len(devs) - online, "Agents": sortedCounts(agents),
		"Releases": releases, "Alerts": alerts, "Active": active, "Versions": versions,
	})
}

type count struct {
	Key string
	N   int
}

func sortedCounts(m map[string]int) []count {
	out := make([]count, 0, len(m))
	for k, n := range m {
		out = append(out, count{k, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].N > out[j].N || out[i].N == out[j].N && out[i].Key < out[j].Key })
	return out
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (c *Console) devices(w http.ResponseWriter, r *http.Request, u user) {
	q := r.URL.Query()
	opts := apiclient.ListOptions{Selector: q.Get("selector"), Limit: maxDevicesShown}
	if o := q.Get("online"); o == "true" || o == "false" {
		b := o == "true"
		opts.Online = &b
	}
	devs, err := c.client(u).ListDevices(r.Context(), opts)
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	total := len(devs)
	if len(devs) > maxDeviceRows {
		devs = devs[:maxDeviceRows]
	}
	c.render(w, r, http.StatusOK, "devices", u, map[string]any{"Devices": devs, "Total": total, "Selector": opts.Selector, "OnlineFilter": q.Get("online")})
}

func (c *Console) device(w http.ResponseWriter, r *http.Request, u user) {
	cl := c.client(u)
	ctx := r.Context()
	id := r.PathValue("id")
	d, err := cl.Device(ctx, id)
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	var facts *pb.Facts
	if len(d.Facts) > 0 {
		f := &pb.Facts{}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(d.Facts, f); err == nil {
			facts = f
		}
	}
	data := map[string]any{"Device": d, "Facts": facts}
	if ev, err := cl.DeviceEvents(ctx, id, apiclient.EventOptions{Limit: 50}); err == nil {
		data["Events"] = ev
	}
	if ms, err := cl.DeviceModels(ctx, id); err == nil {
		data["Models"] = ms
	}
	if ps, err := cl.Progress(ctx, id); err == nil {
		data["Progress"] = ps
	}
	if rep, err := cl.Drift(ctx, apiclient.DriftOptions{Device: id, Since: 24 * time.Hour}); err == nil {
		data["Summaries"] = rep.Releases
	}
	if sb, err := cl.SupportBundles(ctx, id); err == nil {
		data["SupportBundles"] = sb
	}
	if res, ok := c.diag.get(id); ok {
		data["Diag"] = res
	}
	c.render(w, r, http.StatusOK, "device", u, data)
}

func (c *Console) rollouts(w http.ResponseWriter, r *http.Request, u user) {
	ros, err := c.client(u).ListRollouts(r.Context(), r.URL.Query().Get("model"), r.URL.Query().Get("phase"), 100)
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	c.render(w, r, http.StatusOK, "rollouts", u, map[string]any{"Rollouts": ros, "Spec": exampleSpec})
}

const exampleSpec = `name: my rollout
bundle: {model: MODEL, release: 1}
stages:
  - {name: canary, count: 1, bake: 10m}
  - {percent: 100}
gates: {window: 5m, min_devices_reporting: 1}
`

func (c *Console) createRollout(w http.ResponseWriter, r *http.Request, u user) {
	spec := r.PostForm.Get("spec")
	v, err := c.client(u).CreateRollout(r.Context(), []byte(spec))
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	http.Redirect(w, r, "/rollouts/"+url.PathEscape(v.ID), http.StatusSeeOther)
}

func (c *Console) rolloutData(r *http.Request, u user) (map[string]any, error) {
	cl := c.client(u)
	id := r.PathValue("id")
	v, err := cl.Rollout(r.Context(), id, true)
	if err != nil {
		return nil, err
	}
	total := 0
	for _, n := range v.Devices {
		total += n
	}
	phases := sortedCounts(v.Devices)
	data := map[string]any{"Rollout": v, "DeviceTotal": total, "DevicePhases": phases}
	if a, err := cl.RolloutAudit(r.Context(), id, 20); err == nil {
		data["Audit"] = a
	}
	return data, nil
}

func (c *Console) rollout(w http.ResponseWriter, r *http.Request, u user) {
	data, err := c.rolloutData(r, u)
	if err != nil {
		c.apiError(w, r, u, err)
		return
	}
	c.render(w, r, http.StatusOK, "rollout", u, data)
}

// rolloutLive is the live part of the rollout page alone, which the
// page's script fetches every LivePoll.
func (c *Console) rolloutLive(w http.ResponseWriter, r *http.Request, u user) {
	data, err := c.rolloutData(r, u)
	if err != nil {
		http.Error(w, err.Error(), cmpStatus(apiclient.StatusOf(err)))
		return
	}
	c.render(w, r, http.StatusOK, "rollout_live", u, data)
}

// unavailable says whether err is the API's 503: a service the server
// runs without (rollouts, telemetry), which a page shows as absent.
func unavailable(err error) bool {
	return apiclient.StatusOf(err) == http.StatusServiceUnavailable
}

func cmpStatus(s int) int {
	if s == 0 {
		return http.StatusInternalServerError
	}
	return s
}

func (c *Console) actRollout(w http.ResponseWriter, r *http.Request, u user) {
	action := r.PathValue("action")
	switch action {
	case "pause", "resume", "promote", "abort":
	default:
		http.Error(w, "unknown action", http.StatusNotFound)
		return
	}
	id := r.PathValue("id")
	if _, err := c.client(u).RolloutAction(r.Context(), id, action, r.PostForm.Get("reason")); err != nil {
		c.apiError(w, r, u, err)
		return
	}
	http.Redirect(w, r, "/rollouts/"+url.PathEscape(id), http.StatusSeeOther)
}

func (c *Console) audit(w http.ResponseWriter, r *http.Request, u user) {
	before, _ := strconv.ParseInt(r.URL.Query().Get("before"), 10, 64)
	var entries []api.AuditView
	p := "/v1/audit?limit=100"
	if before > 0 {
		p += "&before=" + strconv.FormatInt(before, 10)
	}
	if err := c.getJSON(r, u, p, &entries); err != nil {
		c.apiError(w, r, u, err)
		return
	}
	var next int64
	if len(entries) == 100 {
		next = entries[len(entries)-1].ID
	}
	c.render(w, r, http.StatusOK, "audit", u, map[string]any{"Entries": entries, "Next": next})
}

// getJSON is a GET of the API in-process as u, for routes the API client
// has no method for.
func (c *Console) getJSON(r *http.Request, u user, path string, out any) error {
	req, err := http.NewRequestWithContext(r.Context(), "GET", "http://console.internal"+path, nil)
	if err != nil {
		return err
	}
	resp, err := (inProcess{h: c.cfg.API, caller: api.Caller{User: u.Name, Role: u.Role}}).RoundTrip(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e api.ErrorBody
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return &apiclient.Error{Status: resp.StatusCode, Message: e.Error}
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
