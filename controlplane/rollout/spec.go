package rollout

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
)

// Spec is a rollout as an operator writes it (YAML or JSON; docs/rollouts.md
// is the reference). Parse reads and validates one.
type Spec struct {
	// Name is free text for people; the rollout's ID is the server's.
	Name     string   `yaml:"name"`
	Bundle   Bundle   `yaml:"bundle"`
	Selector Selector `yaml:"selector"`
	// Stages are cumulative: each names how many of the selected devices
	// run the release once it is done.
	Stages []Stage `yaml:"stages"`
	Gates  Gates   `yaml:"gates"`
	// FailurePolicy says what a breached gate does: PolicyPause (the
	// default) or PolicyRollback.
	FailurePolicy Policy `yaml:"failure_policy"`
	// RateLimit bounds new assignments; rollbacks are never held back.
	RateLimit   RateLimit    `yaml:"rate_limit"`
	Maintenance *Maintenance `yaml:"maintenance"`
}

// Bundle names the release rolled out.
type Bundle struct {
	Model   string `yaml:"model"`
	Release uint64 `yaml:"release"`
	// RollbackRelease is what a rolled-back device is sent to: the
	// previous version re-released under a higher counter (flotctl bundle
	// rerelease), because a device never installs a lower counter than it
	// runs. 0: each device is sent back to the release it ran before,
	// which only a device that has not committed the new one can still
	// take.
	RollbackRelease uint64 `yaml:"rollback_release"`
}

// Selector chooses the devices of a rollout: every label must match, and
// each facts list that is set must be satisfied.
type Selector struct {
	Labels map[string]string `yaml:"labels"`
	// Arch: the device's architecture is one of these ("arm64", "amd64",
	// "arm/7").
	Arch []string `yaml:"arch"`
	// Accelerators: the device has every one of these ("cuda", "coral").
	Accelerators []string `yaml:"accelerators"`
	// Runtimes: the device's agent has every one of these ("onnx", "wasm").
	Runtimes []string `yaml:"runtimes"`
}

// Stage is one step of the rollout: exactly one of Percent (of the
// selected, compatible devices, rounded up) and Count, cumulative.
type Stage struct {
	Name    string   `yaml:"name"`
	Percent *float64 `yaml:"percent"`
	Count   *int     `yaml:"count"`
	// Bake is how long the stage's gates must hold once every device of
	// the stage has committed the release, before the next stage.
	Bake time.Duration `yaml:"bake"`
}

// Policy is what a breached gate does.
type Policy string

// Failure policies.
const (
	PolicyPause    Policy = "pause"
	PolicyRollback Policy = "rollback"
)

// RateLimit bounds how many devices are assigned the release in any
// minute; 0 means no bound.
type RateLimit struct {
	DevicesPerMinute int `yaml:"devices_per_minute"`
}

// Maintenance restricts assignments to windows of the device's local time.
type Maintenance struct {
	// TimezoneLabel names the device label holding its IANA time zone
	// ("tz" when empty).
	TimezoneLabel string `yaml:"timezone_label"`
	// DefaultTimezone is used for devices without the label ("UTC" when
	// empty).
	DefaultTimezone string              `yaml:"default_timezone"`
	Windows         []MaintenanceWindow `yaml:"windows"`
}

// MaintenanceWindow is a daily window of local time, [Start, End); an End
// before Start crosses midnight and belongs to the day it starts on.
type MaintenanceWindow struct {
	// Days it opens on: "mon" … "sun"; empty means every day.
	Days  []string `yaml:"days"`
	Start string   `yaml:"start"` // "HH:MM"
	End   string   `yaml:"end"`   // "HH:MM"; "24:00" allowed
}

// Gates decide whether a stage may advance. Each comparison is of the
// rollout's cohort on the new release with the selected devices still on
// their previous release, over the same window of summaries. A gate that
// is not set is not evaluated; the device-reporting minimum always is.
type Gates struct {
	// Window is how far back the summaries judged reach (default 10m).
	Window time.Duration `yaml:"window"`
	// MinDevicesReporting is the number of devices of a cohort that must
	// have sent a summary in the window (at most the cohort's size, at
	// least 1): silence never passes a gate.
	MinDevicesReporting int `yaml:"min_devices_reporting"`
	// MinRequests is the number of inferences a cohort must have served
	// in the window before its rates are judged (default 100).
	MinRequests *uint64 `yaml:"min_requests"`

	ErrorRate          *RateGate    `yaml:"error_rate"`
	LatencyP95         *LatencyGate `yaml:"latency_p95"`
	Rollbacks          *CountGate   `yaml:"rollbacks"`
	ShadowDisagreement *RateGate    `yaml:"shadow_disagreement"`
	Drift              *DriftGate   `yaml:"drift"`
}

// RateGate bounds a rate (0..1): absolutely, and by how much it may exceed
// the previous release's.
type RateGate struct {
	Max         *float64 `yaml:"max"`
	MaxIncrease *float64 `yaml:"max_increase"`
}

// LatencyGate bounds the cohort's p95 latency in milliseconds, and its
// ratio to the previous release's p95.
type LatencyGate struct {
	MaxMs    *float64 `yaml:"max_ms"`
	MaxRatio *float64 `yaml:"max_ratio"`
}

// CountGate bounds the devices of the cohort that rolled the release back
// (or refused it at its golden check) by themselves: a number and a share.
type CountGate struct {
	Max     *int     `yaml:"max"`
	MaxRate *float64 `yaml:"max_rate"`
}

// DriftGate bounds the cohort's drift scores against the bundle's
// baseline (the worst feature or prediction; proto/summary), and the JS
// distance's excess over the previous release's against its own baseline.
type DriftGate struct {
	MaxJS         *float64 `yaml:"max_js"`
	MaxPSI        *float64 `yaml:"max_psi"`
	MaxKS         *float64 `yaml:"max_ks"`
	MaxJSIncrease *float64 `yaml:"max_js_increase"`
}

// Defaults.
const (
	DefaultWindow      = 10 * time.Minute
	DefaultMinRequests = 100
	DefaultTZLabel     = "tz"
	MaxStages          = 32
)

// Parse reads a rollout spec in YAML or JSON, strictly: an unknown field,
// a value of the wrong type or an impossible value is an error naming the
// field (wrapping ErrInvalidSpec). Defaults are filled in.
func Parse(data []byte) (*Spec, error) {
	var s Spec
	if err := decodeStrict(data, &s); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

var (
	modelName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,127}$`)
	labelKey  = regexp.MustCompile(`^[a-zA-Z0-9._/-]{1,63}$`)
	factName  = regexp.MustCompile(`^[a-zA-Z0-9._/-]{1,64}$`)
	clock     = regexp.MustCompile(`^([01][0-9]|2[0-3]):[0-5][0-9]$|^24:00$`)
)

var dayNames = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday,
	"wed": time.Wednesday, "thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidSpec, field, fmt.Sprintf(format, args...))
}

// Validate checks s and fills in its defaults.
func (s *Spec) Validate() error {
	if len(s.Name) > 200 {
		return invalid("name", "at most 200 characters")
	}
	if !modelName.MatchString(s.Bundle.Model) {
		return invalid("bundle.model", "required: a model name of a-z 0-9 _ . - (got %q)", s.Bundle.Model)
	}
	if s.Bundle.Release == 0 {
		return invalid("bundle.release", "required, > 0")
	}
	if r := s.Bundle.RollbackRelease; r != 0 && r <= s.Bundle.Release {
		return invalid("bundle.rollback_release", "%d must be above release %d: devices never install a lower counter, so the previous version is re-released above it", r, s.Bundle.Release)
	}
	if err := s.Selector.validate(); err != nil {
		return err
	}
	if len(s.Stages) == 0 {
		return invalid("stages", "at least one stage is required")
	}
	if len(s.Stages) > MaxStages {
		return invalid("stages", "%d stages, at most %d", len(s.Stages), MaxStages)
	}
	lastPct, lastCount := -1.0, -1
	for i, st := range s.Stages {
		f := fmt.Sprintf("stages[%d]", i)
		switch {
		case (st.Percent == nil) == (st.Count == nil):
			return invalid(f, "exactly one of percent and count is required")
		case st.Percent != nil && (*st.Percent <= 0 || *st.Percent > 100):
			return invalid(f+".percent", "%v is not in (0, 100]", *st.Percent)
		case st.Count != nil && *st.Count <= 0:
			return invalid(f+".count", "%d must be > 0", *st.Count)
		case st.Bake < 0:
			return invalid(f+".bake", "must not be negative")
		case st.Bake > 30*24*time.Hour:
			return invalid(f+".bake", "%v is over 30 days", st.Bake)
		case len(st.Name) > 64:
			return invalid(f+".name", "at most 64 characters")
		}
		if st.Percent != nil {
			if *st.Percent <= lastPct {
				return invalid(f+".percent", "stages are cumulative: %v%% is not above the stage before (%v%%)", *st.Percent, lastPct)
			}
			lastPct = *st.Percent
		} else {
			if *st.Count <= lastCount {
				return invalid(f+".count", "stages are cumulative: %d is not above the stage before (%d)", *st.Count, lastCount)
			}
			lastCount = *st.Count
		}
	}
	switch s.FailurePolicy {
	case "":
		s.FailurePolicy = PolicyPause
	case PolicyPause, PolicyRollback:
	default:
		return invalid("failure_policy", "%q: want pause or rollback", s.FailurePolicy)
	}
	if s.RateLimit.DevicesPerMinute < 0 {
		return invalid("rate_limit.devices_per_minute", "must not be negative")
	}
	if err := s.Gates.validate(); err != nil {
		return err
	}
	if s.Maintenance != nil {
		if err := s.Maintenance.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (sel *Selector) validate() error {
	if len(sel.Labels) > 64 {
		return invalid("selector.labels", "at most 64 labels")
	}
	for k, v := range sel.Labels {
		if !labelKey.MatchString(k) {
			return invalid("selector.labels."+k, "a label key is 1 to 63 of a-z A-Z 0-9 . _ / -")
		}
		if len(v) > 255 {
			return invalid("selector.labels."+k, "value over 255 bytes")
		}
	}
	for name, list := range map[string][]string{"arch": sel.Arch, "accelerators": sel.Accelerators, "runtimes": sel.Runtimes} {
		if len(list) > 32 {
			return invalid("selector."+name, "at most 32 entries")
		}
		for i, v := range list {
			if !factName.MatchString(v) {
				return invalid(fmt.Sprintf("selector.%s[%d]", name, i), "%q is not a fact value", v)
			}
		}
	}
	return nil
}

func checkRate(field string, p *float64) error {
	if p != nil && (*p < 0 || *p > 1) {
		return invalid(field, "%v is not a rate in [0, 1]", *p)
	}
	return nil
}

func checkNonNeg(field string, p *float64) error {
	if p != nil && *p < 0 {
		return invalid(field, "must not be negative")
	}
	return nil
}

func (g *Gates) validate() error {
	switch {
	case g.Window == 0:
		g.Window = DefaultWindow
	case g.Window < time.Minute || g.Window > 7*24*time.Hour:
		return invalid("gates.window", "%v is not between 1m and 168h", g.Window)
	}
	switch {
	case g.MinDevicesReporting == 0:
		g.MinDevicesReporting = 1
	case g.MinDevicesReporting < 0:
		return invalid("gates.min_devices_reporting", "must be ≥ 1")
	}
	if g.MinRequests == nil {
		n := uint64(DefaultMinRequests)
		g.MinRequests = &n
	}
	if e := g.ErrorRate; e != nil {
		if e.Max == nil && e.MaxIncrease == nil {
			return invalid("gates.error_rate", "set max, max_increase or both")
		}
		if err := checkRate("gates.error_rate.max", e.Max); err != nil {
			return err
		}
		if err := checkRate("gates.error_rate.max_increase", e.MaxIncrease); err != nil {
			return err
		}
	}
	if e := g.ShadowDisagreement; e != nil {
		if e.Max == nil && e.MaxIncrease == nil {
			return invalid("gates.shadow_disagreement", "set max, max_increase or both")
		}
		if err := checkRate("gates.shadow_disagreement.max", e.Max); err != nil {
			return err
		}
		if err := checkRate("gates.shadow_disagreement.max_increase", e.MaxIncrease); err != nil {
			return err
		}
	}
	if l := g.LatencyP95; l != nil {
		if l.MaxMs == nil && l.MaxRatio == nil {
			return invalid("gates.latency_p95", "set max_ms, max_ratio or both")
		}
		if l.MaxMs != nil && *l.MaxMs <= 0 {
			return invalid("gates.latency_p95.max_ms", "must be > 0")
		}
		if l.MaxRatio != nil && *l.MaxRatio < 1 {
			return invalid("gates.latency_p95.max_ratio", "%v is below 1: the new release could never be as fast as the old", *l.MaxRatio)
		}
	}
	if r := g.Rollbacks; r != nil {
		if r.Max == nil && r.MaxRate == nil {
			return invalid("gates.rollbacks", "set max, max_rate or both")
		}
		if r.Max != nil && *r.Max < 0 {
			return invalid("gates.rollbacks.max", "must not be negative")
		}
		if err := checkRate("gates.rollbacks.max_rate", r.MaxRate); err != nil {
			return err
		}
	}
	if d := g.Drift; d != nil {
		if d.MaxJS == nil && d.MaxPSI == nil && d.MaxKS == nil && d.MaxJSIncrease == nil {
			return invalid("gates.drift", "set max_js, max_psi, max_ks or max_js_increase")
		}
		if err := checkRate("gates.drift.max_js", d.MaxJS); err != nil {
			return err
		}
		if err := checkNonNeg("gates.drift.max_psi", d.MaxPSI); err != nil {
			return err
		}
		if err := checkRate("gates.drift.max_ks", d.MaxKS); err != nil {
			return err
		}
		if err := checkRate("gates.drift.max_js_increase", d.MaxJSIncrease); err != nil {
			return err
		}
	}
	return nil
}

func (m *Maintenance) validate() error {
	if m.TimezoneLabel == "" {
		m.TimezoneLabel = DefaultTZLabel
	}
	if !labelKey.MatchString(m.TimezoneLabel) {
		return invalid("maintenance.timezone_label", "%q is not a label key", m.TimezoneLabel)
	}
	if m.DefaultTimezone == "" {
		m.DefaultTimezone = "UTC"
	}
	if _, err := time.LoadLocation(m.DefaultTimezone); err != nil {
		return invalid("maintenance.default_timezone", "%q is not a known time zone", m.DefaultTimezone)
	}
	if len(m.Windows) == 0 {
		return invalid("maintenance.windows", "at least one window (or leave maintenance out)")
	}
	if len(m.Windows) > 32 {
		return invalid("maintenance.windows", "at most 32 windows")
	}
	for i, w := range m.Windows {
		f := fmt.Sprintf("maintenance.windows[%d]", i)
		for j, d := range w.Days {
			if _, ok := dayNames[strings.ToLower(d)]; !ok {
				return invalid(fmt.Sprintf("%s.days[%d]", f, j), "%q: want mon, tue, wed, thu, fri, sat or sun", d)
			}
		}
		if !clock.MatchString(w.Start) || w.Start == "24:00" {
			return invalid(f+".start", "%q: want HH:MM from 00:00 to 23:59", w.Start)
		}
		if !clock.MatchString(w.End) {
			return invalid(f+".end", "%q: want HH:MM from 00:00 to 24:00", w.End)
		}
		if w.Start == w.End {
			return invalid(f+".end", "equals start: an empty window")
		}
	}
	return nil
}

// stageTarget is how many of n eligible devices stage i covers.
func (s *Spec) stageTarget(i, n int) int {
	st := s.Stages[i]
	if st.Count != nil {
		return min(*st.Count, n)
	}
	// The epsilon keeps 10% of 30 at 3 despite binary fractions.
	t := int(math.Ceil(*st.Percent*float64(n)/100 - 1e-9))
	return min(t, n)
}

// minRequests is the gates' request minimum.
func (g *Gates) minRequests() uint64 {
	if g.MinRequests == nil {
		return DefaultMinRequests
	}
	return *g.MinRequests
}
