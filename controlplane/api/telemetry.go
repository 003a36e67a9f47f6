package api

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Telemetry is what the API asks of the control plane's telemetry: drift
// reports merged from the devices' window summaries, and device events.
// Errors wrap store's sentinels (ErrInvalid, ErrNotFound) for their status.
type Telemetry interface {
	Drift(ctx context.Context, q DriftQuery) (DriftReport, error)
	DeviceEvents(ctx context.Context, q EventQuery) ([]EventView, error)
}

// DriftQuery selects the summaries a drift report merges: one model (all
// models with telemetry when empty), one release or all, of one device, a
// cohort (labels) or the fleet, whose windows start in [From, To).
type DriftQuery struct {
	Model    string
	Release  uint64
	Device   string
	Selector map[string]string
	From, To time.Time
}

// EventQuery selects one device's events dated in [From, To); a zero From
// or To leaves that end open.
type EventQuery struct {
	Device   string
	From, To time.Time
	Levels   []string
	Limit    int
}

// DriftReport is the answer of GET /v1/drift.
type DriftReport struct {
	From         time.Time         `json:"from"`
	To           time.Time         `json:"to"`
	Device       string            `json:"device,omitempty"`
	Selector     map[string]string `json:"selector,omitempty"`
	Releases     []ReleaseDrift    `json:"releases" doc:"one per model release with telemetry in range"`
	RawSummaries int               `json:"raw_summaries" doc:"window summaries merged as stored"`
	RollupRows   int               `json:"rollup_rows" doc:"hourly and daily rollups merged"`
}

// ReleaseDrift is one model release's merged telemetry and its drift.
type ReleaseDrift struct {
	Model      string         `json:"model"`
	Release    uint64         `json:"release"`
	Version    string         `json:"version,omitempty"`
	Devices    int            `json:"devices"`
	Windows    uint32         `json:"windows" doc:"base windows merged"`
	Requests   uint64         `json:"requests"`
	Errors     uint64         `json:"errors"`
	ErrorRate  float64        `json:"error_rate"`
	LatencyMs  *LatencyView   `json:"latency_ms,omitempty" doc:"quantiles within 1 % (DDSketch); absent without requests"`
	Counters   *CountersView  `json:"counters,omitempty"`
	State      string         `json:"state" doc:"ok, warn, alert, unjudged (fewer requests than min_records) or no-baseline"`
	Judged     bool           `json:"judged"`
	Alert      bool           `json:"alert"`
	Warn       bool           `json:"warn"`
	Baseline   bool           `json:"baseline" doc:"the release's manifest and its drift baseline are on this control plane"`
	MinRecords uint64         `json:"min_records"`
	Thresholds ThresholdsView `json:"thresholds"`
	Max        ScoresView     `json:"max" doc:"the worst score over the features and the prediction"`
	Features   []FeatureDrift `json:"features"`
	Prediction *FeatureDrift  `json:"prediction,omitempty"`
}

// LatencyView holds latency quantiles in milliseconds.
type LatencyView struct {
	P50 float64 `json:"p50"`
	P95 float64 `json:"p95"`
	P99 float64 `json:"p99"`
}

// CountersView are the lifecycle's per-model counters, summed.
type CountersView struct {
	Errors              uint64 `json:"errors"`
	Crashes             uint64 `json:"crashes"`
	Rollbacks           uint64 `json:"rollbacks"`
	ShadowCompared      uint64 `json:"shadow_compared"`
	ShadowDisagreements uint64 `json:"shadow_disagreements"`
}

// ThresholdsView are the drift thresholds in force: above JS or PSI an
// alert, above PSIWarn or KS a warning.
type ThresholdsView struct {
	JS      float64 `json:"js"`
	PSI     float64 `json:"psi"`
	PSIWarn float64 `json:"psi_warn"`
	KS      float64 `json:"ks"`
}

// ScoresView is a set of drift scores.
type ScoresView struct {
	JS  float64 `json:"js" doc:"Jensen-Shannon distance, base 2"`
	PSI float64 `json:"psi"`
	KS  float64 `json:"ks"`
}

// FeatureDrift is one monitored feature's (or the prediction's) merged
// statistics and drift scores.
type FeatureDrift struct {
	Name    string  `json:"name"`
	Count   uint64  `json:"count" doc:"finite values"`
	Missing uint64  `json:"missing"`
	NaN     uint64  `json:"nan"`
	PosInf  uint64  `json:"pos_inf"`
	NegInf  uint64  `json:"neg_inf"`
	Min     float64 `json:"min"`
	Max     float64 `json:"max"`
	Mean    float64 `json:"mean"`
	Std     float64 `json:"std"`
	JS      float64 `json:"js"`
	PSI     float64 `json:"psi"`
	KS      float64 `json:"ks"`
	Scored  bool    `json:"scored"`
	State   string  `json:"state"`
	// Histogram is absent without a baseline for the value.
	Histogram *HistogramView `json:"histogram,omitempty" doc:"the baseline's and the merged summaries' bin counts, on the baseline's bins"`
}

// HistogramView is one value's histograms on the baseline's bins, for
// drawing. Numeric (edges): n strictly increasing edges make n+1 bins,
// bin 0 below edges[0], bin i in [edges[i-1], edges[i]), bin n at or above
// edges[n-1]. Categorical (categories): bin i is categories[i], and one
// last bin anything outside them. baseline and current have one count per
// bin; current is absent when the devices binned on other bins (another
// baseline), all zeros when no summary arrived.
type HistogramView struct {
	Edges      []float64 `json:"edges,omitempty" doc:"numeric value: the n bin edges (n+1 bins)"`
	Categories []string  `json:"categories,omitempty" doc:"categorical value: one bin per category, then one for any other"`
	Baseline   []uint64  `json:"baseline" doc:"the baseline's count per bin"`
	Current    []uint64  `json:"current,omitempty" doc:"the merged summaries' count per bin; absent when binned on other bins"`
}

// EventView is one device event.
type EventView struct {
	At         time.Time         `json:"at" doc:"the device's clock"`
	Level      string            `json:"level"`
	Code       string            `json:"code"`
	Message    string            `json:"message,omitempty"`
	Attrs      map[string]string `json:"attrs,omitempty"`
	ReceivedAt time.Time         `json:"received_at"`
	Epoch      string            `json:"epoch"`
	Sequence   uint64            `json:"sequence"`
}

// maxRange is the longest time range a query covers: the daily rollups'
// default retention.
const maxRange = 2 * 366 * 24 * time.Hour

var rangeParams = []param{
	{"since", "Go duration back from now (default 1h); or from and to"},
	{"from", "range start, RFC 3339 or Unix milliseconds"},
	{"to", "range end (exclusive), RFC 3339 or Unix milliseconds; default now"},
}

func (a *API) telemetry(w http.ResponseWriter) (Telemetry, bool) {
	if a.cfg.Telemetry == nil {
		writeError(w, http.StatusServiceUnavailable, "telemetry is not configured on this server")
		return nil, false
	}
	return a.cfg.Telemetry, true
}

// timeRange reads since, or from and to, from the query.
func (a *API) timeRange(r *http.Request) (from, to time.Time, err error) {
	q := r.URL.Query()
	to = a.cfg.Now()
	if s := q.Get("to"); s != "" {
		if to, err = parseTime(s); err != nil {
			return from, to, fmt.Errorf("to: %w", err)
		}
	}
	switch since, f := q.Get("since"), q.Get("from"); {
	case since != "" && f != "":
		return from, to, fmt.Errorf("give since or from, not both")
	case f != "":
		if from, err = parseTime(f); err != nil {
			return from, to, fmt.Errorf("from: %w", err)
		}
	default:
		d := time.Hour
		if since != "" {
			if d, err = time.ParseDuration(since); err != nil || d <= 0 {
				return from, to, fmt.Errorf("since must be a positive Go duration such as 1h or 30m")
			}
		}
		from = to.Add(-min(d, maxRange))
	}
	if !from.Before(to) {
		return from, to, fmt.Errorf("the time range is empty: from %s is not before to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	if to.Sub(from) > maxRange {
		return from, to, fmt.Errorf("the time range is over %s", maxRange)
	}
	return from.UTC(), to.UTC(), nil
}

func parseTime(s string) (time.Time, error) {
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, fmt.Errorf("%q is neither RFC 3339 nor Unix milliseconds", s)
	}
	return t, nil
}

func (a *API) drift(w http.ResponseWriter, r *http.Request) {
	tm, ok := a.telemetry(w)
	if !ok {
		return
	}
	q := r.URL.Query()
	dq := DriftQuery{Model: q.Get("model"), Device: q.Get("device")}
	var err error
	if dq.From, dq.To, err = a.timeRange(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s := q.Get("release"); s != "" {
		if dq.Release, err = strconv.ParseUint(s, 10, 64); err != nil || dq.Release == 0 {
			writeError(w, http.StatusBadRequest, "release must be a positive integer")
			return
		}
		if dq.Model == "" {
			writeError(w, http.StatusBadRequest, "a release needs its model")
			return
		}
	}
	if s := q.Get("selector"); s != "" {
		if dq.Device != "" {
			writeError(w, http.StatusBadRequest, "give device or selector, not both")
			return
		}
		if dq.Selector, err = ParseSelector(s); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if dq.Device != "" {
		if _, err := a.cfg.Store.Device(r.Context(), dq.Device); err != nil {
			a.fail(w, r, err)
			return
		}
	}
	rep, err := tm.Drift(r.Context(), dq)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if rep.Releases == nil {
		rep.Releases = []ReleaseDrift{}
	}
	writeJSON(w, http.StatusOK, rep)
}

func (a *API) deviceEvents(w http.ResponseWriter, r *http.Request) {
	tm, ok := a.telemetry(w)
	if !ok {
		return
	}
	eq := EventQuery{Device: r.PathValue("id"), Limit: 100}
	q := r.URL.Query()
	var err error
	if q.Get("since") == "" && q.Get("from") == "" {
		// By default every event kept, newest first, whatever the device's
		// clock said.
		if s := q.Get("to"); s != "" {
			if eq.To, err = parseTime(s); err != nil {
				writeError(w, http.StatusBadRequest, "to: "+err.Error())
				return
			}
		}
	} else if eq.From, eq.To, err = a.timeRange(r); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if s := q.Get("level"); s != "" {
		for _, l := range strings.Split(s, ",") {
			switch l {
			case "info", "warn", "error":
				eq.Levels = append(eq.Levels, l)
			default:
				writeError(w, http.StatusBadRequest, fmt.Sprintf("level %q: want info, warn or error (comma-separated)", l))
				return
			}
		}
	}
	if s := q.Get("limit"); s != "" {
		if eq.Limit, err = strconv.Atoi(s); err != nil || eq.Limit < 1 || eq.Limit > maxPage {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit must be 1 to %d", maxPage))
			return
		}
	}
	if _, err := a.cfg.Store.Device(r.Context(), eq.Device); err != nil {
		a.fail(w, r, err)
		return
	}
	evs, err := tm.DeviceEvents(r.Context(), eq)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if evs == nil {
		evs = []EventView{}
	}
	writeJSON(w, http.StatusOK, evs)
}
