// Package summary is the arithmetic of window summaries, shared by the
// agent, which builds them from inference records, and the control plane,
// which merges them across devices and time: binning on a drift baseline's
// edges, per-feature moments (Welford's update, Chan's parallel merge), the
// DDSketch latency sketch, merging, and the drift scores (Jensen-Shannon
// distance, population stability index, Kolmogorov-Smirnov statistic over
// binned CDFs) with their thresholds.
//
// It imports only proto/flotillapb and third-party packages, so both sides
// of the agent/control-plane fence can use it. docs/telemetry.md gives the
// definitions; testdata/make_fixture.py computed the reference values the
// tests compare against with SciPy.
package summary
