package flotillapb

import (
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/flotilla-edge/flotilla/proto/topic"
)

// ManifestSchemaVersion is the bundle manifest schema this build writes and
// the newest it reads.
const ManifestSchemaVersion = 1

// Limits on a bundle manifest. A manifest over any of them is refused by
// Validate, so neither side ever stores or unpacks it.
const (
	DefaultChunkSize = 256 << 10
	MinChunkSize     = 4 << 10
	MaxChunkSize     = 256 << 10 // a Chunk message must fit the 512 KiB chunk topics
	MaxManifestSize  = 8 << 20
	MaxFiles         = 4096
	MaxFileSize      = 16 << 30
	MaxBundleSize    = 16 << 30
	MaxChunks        = 1 << 17
	MaxPathLen       = 1024
	MaxPathSegment   = 255

	maxVariants      = 16
	maxTensors       = 64
	maxRank          = 8
	maxGoldenBytes   = 4 << 20
	maxFeatures      = 1024
	maxBins          = 1024
	maxAnnotations   = 32
	maxChunkRanges   = 4096
	maxMetadataRoles = 64
	maxRoleBytes     = 512 << 10
)

// Errors callers branch on with errors.Is.
var (
	ErrBadPath        = errors.New("bad bundle path")
	ErrSchemaTooNew   = errors.New("manifest schema is newer than this build")
	ErrManifestLimits = errors.New("manifest over its limits")
)

// CheckBundlePath checks a file path in a bundle: relative, slash-separated,
// clean (no empty, "." or ".." segment), no backslash, NUL or control
// character, valid UTF-8, at most MaxPathLen bytes and MaxPathSegment per
// segment. Such a path can never leave the folder it is unpacked into.
func CheckBundlePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("%w: empty", ErrBadPath)
	case len(p) > MaxPathLen:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrBadPath, len(p), MaxPathLen)
	case !utf8.ValidString(p):
		return fmt.Errorf("%w %q: not UTF-8", ErrBadPath, p)
	case p[0] == '/':
		return fmt.Errorf("%w %q: absolute", ErrBadPath, p)
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\\':
			return fmt.Errorf("%w %q: backslash", ErrBadPath, p)
		case c < 0x20 || c == 0x7f:
			return fmt.Errorf("%w %q: control character or NUL", ErrBadPath, p)
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		switch {
		case seg == "" || seg == ".":
			return fmt.Errorf("%w %q: not clean", ErrBadPath, p)
		case seg == "..":
			return fmt.Errorf("%w %q: has a .. segment", ErrBadPath, p)
		case len(seg) > MaxPathSegment:
			return fmt.Errorf("%w %q: a segment is over %d bytes", ErrBadPath, p, MaxPathSegment)
		}
	}
	return nil
}

// CheckDigest checks a bundle digest: 64 lowercase hex characters.
func CheckDigest(d string) error {
	if len(d) != 64 || strings.ToLower(d) != d {
		return fmt.Errorf("bundle digest %q: must be 64 lowercase hex characters", d)
	}
	if _, err := hex.DecodeString(d); err != nil {
		return fmt.Errorf("bundle digest %q: must be 64 lowercase hex characters", d)
	}
	return nil
}

// Validate checks a manifest completely: required fields, every limit, the
// path rules, that each file's chunks add up to its size, and that every
// path the manifest mentions (variant entries, monitor) is one of its files.
func (m *BundleManifest) Validate() error {
	switch v := m.GetSchemaVersion(); {
	case v == 0:
		return errors.New("schema_version is required")
	case v > ManifestSchemaVersion:
		return fmt.Errorf("%w: version %d, this build reads up to %d", ErrSchemaTooNew, v, ManifestSchemaVersion)
	}
	if err := topic.ValidID(m.GetName()); err != nil {
		return fmt.Errorf("name: %w", err)
	}
	if m.GetRelease() == 0 || m.GetRelease() > math.MaxInt64 {
		return errors.New("release must be 1 to 2^63-1")
	}
	if err := short("version", m.GetVersion(), 128); err != nil {
		return err
	}
	switch m.GetKind() {
	case BundleKind_BUNDLE_KIND_MODEL, BundleKind_BUNDLE_KIND_AGENT:
	default:
		return fmt.Errorf("kind %v is not model or agent", m.GetKind())
	}
	if err := labels("annotations", m.GetAnnotations()); err != nil {
		return err
	}
	if len(m.GetAnnotations()) > maxAnnotations {
		return fmt.Errorf("annotations: %d, at most %d", len(m.GetAnnotations()), maxAnnotations)
	}
	paths, err := validateFiles(m.GetFiles())
	if err != nil {
		return err
	}
	if err := validateVariants(m.GetVariants(), paths); err != nil {
		return err
	}
	if err := tensorInfos("inputs", m.GetInputs()); err != nil {
		return err
	}
	if err := tensorInfos("outputs", m.GetOutputs()); err != nil {
		return err
	}
	if g := m.GetGolden(); g != nil {
		if err := g.validate(m.GetInputs(), m.GetOutputs()); err != nil {
			return fmt.Errorf("golden: %w", err)
		}
	}
	if err := m.GetProbation().validate(); err != nil {
		return fmt.Errorf("probation: %w", err)
	}
	if d := m.GetDrift(); d != nil {
		if err := d.validate(); err != nil {
			return fmt.Errorf("drift: %w", err)
		}
	}
	if mon := m.GetMonitor(); mon != nil {
		if !paths[mon.GetFile()] {
			return fmt.Errorf("monitor: file %q is not in the bundle", mon.GetFile())
		}
		if mon.GetExport() == "" || len(mon.GetExport()) > 128 {
			return errors.New("monitor: export is required and at most 128 bytes")
		}
		if mon.GetSampleEvery() > MaxMonitorSampleEvery {
			return fmt.Errorf("monitor: sample_every %d, at most %d", mon.GetSampleEvery(), MaxMonitorSampleEvery)
		}
		// The function reads the first input; its features are the
		// function's results, read from no tensor.
		if len(m.GetInputs()) == 0 {
			return errors.New("monitor: the manifest names no input for the function to read")
		}
		for _, f := range m.GetDrift().GetFeatures() {
			if f.GetTensor() != "" {
				return fmt.Errorf("monitor: feature %q reads tensor %q; with a monitor function every feature is one of its results", f.GetName(), f.GetTensor())
			}
		}
	}
	return nil
}

// MaxMonitorSampleEvery is the sparsest sampling a monitor function may
// ask for: 1 in a million inferences.
const MaxMonitorSampleEvery = 1_000_000

// validateFiles checks the file list and returns the set of its paths.
func validateFiles(files []*BundleFile) (map[string]bool, error) {
	if len(files) == 0 || len(files) > MaxFiles {
		return nil, fmt.Errorf("%w: %d files, want 1 to %d", ErrManifestLimits, len(files), MaxFiles)
	}
	paths := make(map[string]bool, len(files))
	dirs := make(map[string]bool)
	var total uint64
	var chunks int
	for i, f := range files {
		p := f.GetPath()
		if err := CheckBundlePath(p); err != nil {
			return nil, fmt.Errorf("files[%d]: %w", i, err)
		}
		if i > 0 && files[i-1].GetPath() >= p {
			return nil, fmt.Errorf("files[%d] %q: files must be sorted by path and unique", i, p)
		}
		paths[p] = true
		for d := p; ; {
			j := strings.LastIndexByte(d, '/')
			if j < 0 {
				break
			}
			d = d[:j]
			dirs[d] = true
		}
		if f.GetSize() > MaxFileSize {
			return nil, fmt.Errorf("%w: files[%d] %q: %d bytes, at most %d", ErrManifestLimits, i, p, f.GetSize(), uint64(MaxFileSize))
		}
		if total += f.GetSize(); total > MaxBundleSize {
			return nil, fmt.Errorf("%w: bundle over %d bytes", ErrManifestLimits, uint64(MaxBundleSize))
		}
		if chunks += len(f.GetChunks()); chunks > MaxChunks {
			return nil, fmt.Errorf("%w: over %d chunks", ErrManifestLimits, MaxChunks)
		}
		if mode := f.GetMode(); mode&^0o755 != 0 || mode&0o400 == 0 {
			return nil, fmt.Errorf("files[%d] %q: mode %#o: want owner-readable bits within 0755 (no setuid, setgid, sticky or group/other write)", i, p, mode)
		}
		if len(f.GetSha256()) != 32 {
			return nil, fmt.Errorf("files[%d] %q: sha256 must be 32 bytes", i, p)
		}
		if err := fileChunks(f); err != nil {
			return nil, fmt.Errorf("files[%d] %q: %w", i, p, err)
		}
	}
	for d := range dirs {
		if paths[d] {
			return nil, fmt.Errorf("%w %q: both a file and a folder", ErrBadPath, d)
		}
	}
	return paths, nil
}

// fileChunks checks that f's chunks are chunk_size bytes each, the last one
// the rest, adding up to its size.
func fileChunks(f *BundleFile) error {
	cs := uint64(f.GetChunkSize())
	if cs < MinChunkSize || cs > MaxChunkSize {
		return fmt.Errorf("chunk_size %d: want %d to %d", cs, MinChunkSize, MaxChunkSize)
	}
	want := (f.GetSize() + cs - 1) / cs
	if uint64(len(f.GetChunks())) != want {
		return fmt.Errorf("%d chunks, want %d for %d bytes", len(f.GetChunks()), want, f.GetSize())
	}
	for j, c := range f.GetChunks() {
		wantLen := cs
		if uint64(j) == want-1 {
			wantLen = f.GetSize() - cs*(want-1)
		}
		if uint64(c.GetLength()) != wantLen {
			return fmt.Errorf("chunk %d: length %d, want %d", j, c.GetLength(), wantLen)
		}
		if len(c.GetSha256()) != 32 {
			return fmt.Errorf("chunk %d: sha256 must be 32 bytes", j)
		}
	}
	return nil
}

func validateVariants(vs []*RuntimeVariant, paths map[string]bool) error {
	if len(vs) == 0 || len(vs) > maxVariants {
		return fmt.Errorf("variants: %d, want 1 to %d", len(vs), maxVariants)
	}
	for i, v := range vs {
		if err := topic.ValidID(v.GetRuntime()); err != nil {
			return fmt.Errorf("variants[%d].runtime: %w", i, err)
		}
		if len(v.GetAccelerators()) > 8 || len(v.GetPlatforms()) > 16 {
			return fmt.Errorf("variants[%d]: too many accelerators or platforms", i)
		}
		for _, a := range v.GetAccelerators() {
			if err := topic.ValidID(a); err != nil {
				return fmt.Errorf("variants[%d].accelerators: %w", i, err)
			}
		}
		for _, p := range v.GetPlatforms() {
			if err := short("platform", p, 64); err != nil || !strings.Contains(p, "/") {
				return fmt.Errorf("variants[%d]: platform %q is not GOOS/GOARCH", i, p)
			}
		}
		if !paths[v.GetEntry()] {
			return fmt.Errorf("variants[%d]: entry %q is not in the bundle", i, v.GetEntry())
		}
		if err := labels(fmt.Sprintf("variants[%d].options", i), v.GetOptions()); err != nil {
			return err
		}
	}
	return nil
}

func short(field, s string, n int) error {
	if len(s) > n {
		return fmt.Errorf("%s is over %d bytes", field, n)
	}
	return nil
}

func finiteNonNeg(field string, v float64) error {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
		return fmt.Errorf("%s must be a finite number >= 0, not %v", field, v)
	}
	return nil
}

func rate(field string, v float64) error {
	if err := finiteNonNeg(field, v); err != nil {
		return err
	}
	if v > 1 {
		return fmt.Errorf("%s must be 0 to 1, not %v", field, v)
	}
	return nil
}

// elemSize is the byte size of one element of an ONNX dtype; 0 for string
// and unknown types.
func elemSize(dtype int32) int {
	switch dtype {
	case 2, 3, 9: // uint8, int8, bool
		return 1
	case 4, 5, 10, 16: // uint16, int16, float16, bfloat16
		return 2
	case 1, 6, 12: // float32, int32, uint32
		return 4
	case 7, 11, 13: // int64, float64, uint64
		return 8
	}
	return 0
}

func tensorInfos(field string, ts []*TensorInfo) error {
	if len(ts) > maxTensors {
		return fmt.Errorf("%s: %d, at most %d", field, len(ts), maxTensors)
	}
	seen := make(map[string]bool, len(ts))
	for i, t := range ts {
		if t.GetName() == "" || len(t.GetName()) > 256 || seen[t.GetName()] {
			return fmt.Errorf("%s[%d]: name %q is empty, too long or repeated", field, i, t.GetName())
		}
		seen[t.GetName()] = true
		if t.GetDtype() != 8 && elemSize(t.GetDtype()) == 0 {
			return fmt.Errorf("%s[%d] %q: unknown dtype %d", field, i, t.GetName(), t.GetDtype())
		}
		if len(t.GetShape()) > maxRank {
			return fmt.Errorf("%s[%d] %q: rank %d, at most %d", field, i, t.GetName(), len(t.GetShape()), maxRank)
		}
		for _, d := range t.GetShape() {
			if d < -1 {
				return fmt.Errorf("%s[%d] %q: dimension %d", field, i, t.GetName(), d)
			}
		}
	}
	return nil
}

// tensor checks a concrete tensor: known dtype, static shape, and data (or
// strings) of exactly the size the shape says. It returns the data's size.
func tensor(t *Tensor) (int, error) {
	n := 1
	if len(t.GetShape()) > maxRank {
		return 0, fmt.Errorf("tensor %q: rank %d, at most %d", t.GetName(), len(t.GetShape()), maxRank)
	}
	for _, d := range t.GetShape() {
		if d < 0 || d > maxGoldenBytes {
			return 0, fmt.Errorf("tensor %q: dimension %d", t.GetName(), d)
		}
		if n *= int(d); n > maxGoldenBytes {
			return 0, fmt.Errorf("tensor %q: over %d elements", t.GetName(), maxGoldenBytes)
		}
	}
	if t.GetDtype() == 8 {
		size := 0
		for _, s := range t.GetStrings() {
			size += len(s)
		}
		if len(t.GetStrings()) != n || len(t.GetData()) != 0 {
			return 0, fmt.Errorf("tensor %q: %d strings, want %d", t.GetName(), len(t.GetStrings()), n)
		}
		return size, nil
	}
	es := elemSize(t.GetDtype())
	if es == 0 {
		return 0, fmt.Errorf("tensor %q: unknown dtype %d", t.GetName(), t.GetDtype())
	}
	if len(t.GetData()) != n*es || len(t.GetStrings()) != 0 {
		return 0, fmt.Errorf("tensor %q: %d data bytes, want %d", t.GetName(), len(t.GetData()), n*es)
	}
	return len(t.GetData()), nil
}

func (g *GoldenCheck) validate(inputs, outputs []*TensorInfo) error {
	if len(g.GetInputs()) == 0 || len(g.GetExpected()) == 0 {
		return errors.New("inputs and expected outputs are required")
	}
	if err := finiteNonNeg("abs_tolerance", g.GetAbsTolerance()); err != nil {
		return err
	}
	if err := finiteNonNeg("rel_tolerance", g.GetRelTolerance()); err != nil {
		return err
	}
	total := 0
	for _, set := range []struct {
		field  string
		ts     []*Tensor
		schema []*TensorInfo
	}{{"inputs", g.GetInputs(), inputs}, {"expected", g.GetExpected(), outputs}} {
		if len(set.ts) > maxTensors {
			return fmt.Errorf("%s: %d tensors, at most %d", set.field, len(set.ts), maxTensors)
		}
		for _, t := range set.ts {
			size, err := tensor(t)
			if err != nil {
				return fmt.Errorf("%s: %w", set.field, err)
			}
			if total += size; total > maxGoldenBytes {
				return fmt.Errorf("%w: golden tensors over %d bytes", ErrManifestLimits, maxGoldenBytes)
			}
			if len(set.schema) > 0 && !matchesSchema(t, set.schema) {
				return fmt.Errorf("%s: tensor %q does not match the bundle's tensor schema", set.field, t.GetName())
			}
		}
	}
	return nil
}

// matchesSchema reports whether t is one of schema by name, with its dtype
// and a shape that fits (a -1 dimension matches any).
func matchesSchema(t *Tensor, schema []*TensorInfo) bool {
	for _, s := range schema {
		if s.GetName() != t.GetName() {
			continue
		}
		if s.GetDtype() != t.GetDtype() || len(s.GetShape()) != len(t.GetShape()) {
			return false
		}
		for i, d := range s.GetShape() {
			if d != -1 && d != t.GetShape()[i] {
				return false
			}
		}
		return true
	}
	return false
}

func (p *ProbationPolicy) validate() error {
	if p == nil {
		return nil
	}
	if p.GetDurationS() > 30*24*3600 {
		return errors.New("duration_s is over 30 days")
	}
	if err := rate("max_error_rate", p.GetMaxErrorRate()); err != nil {
		return err
	}
	if err := rate("max_disagreement_rate", p.GetMaxDisagreementRate()); err != nil {
		return err
	}
	return finiteNonNeg("max_p95_latency_ratio", p.GetMaxP95LatencyRatio())
}

// MaxMinWindowRecords bounds DriftBaseline.min_window_records: a window
// needing more would hardly ever be scored.
const MaxMinWindowRecords = 10_000_000

func (d *DriftBaseline) validate() error {
	if len(d.GetFeatures()) > maxFeatures {
		return fmt.Errorf("features: %d, at most %d", len(d.GetFeatures()), maxFeatures)
	}
	seen := make(map[string]bool, len(d.GetFeatures()))
	for i, f := range d.GetFeatures() {
		if seen[f.GetName()] {
			return fmt.Errorf("features[%d]: name %q repeated", i, f.GetName())
		}
		seen[f.GetName()] = true
		if err := f.validate(); err != nil {
			return fmt.Errorf("features[%d]: %w", i, err)
		}
	}
	if p := d.GetPrediction(); p != nil {
		if err := p.validate(); err != nil {
			return fmt.Errorf("prediction: %w", err)
		}
	}
	if n := d.GetMinWindowRecords(); n > MaxMinWindowRecords {
		return fmt.Errorf("min_window_records: %d, at most %d", n, MaxMinWindowRecords)
	}
	t := d.GetThresholds()
	for _, v := range []struct {
		n string
		v float64
	}{{"js", t.GetJs()}, {"psi", t.GetPsi()}, {"ks", t.GetKs()}} {
		if err := finiteNonNeg("thresholds."+v.n, v.v); err != nil {
			return err
		}
	}
	return nil
}

func (f *FeatureBaseline) validate() error {
	if f.GetName() == "" || len(f.GetName()) > 256 || len(f.GetTensor()) > 256 {
		return fmt.Errorf("name %q: required, names at most 256 bytes", f.GetName())
	}
	edges, cats := f.GetBinEdges(), f.GetCategories()
	switch {
	case len(edges) > 0 && len(cats) > 0:
		return fmt.Errorf("%q: bin_edges or categories, not both", f.GetName())
	case len(edges) == 0 && len(cats) == 0:
		return fmt.Errorf("%q: bin_edges or categories are required", f.GetName())
	case len(edges) > maxBins || len(cats) > maxBins:
		return fmt.Errorf("%q: over %d bins", f.GetName(), maxBins)
	}
	for i, e := range edges {
		if math.IsNaN(e) || math.IsInf(e, 0) || (i > 0 && e <= edges[i-1]) {
			return fmt.Errorf("%q: bin_edges must be finite and strictly increasing", f.GetName())
		}
	}
	seen := make(map[string]bool, len(cats))
	for _, c := range cats {
		if seen[c] || len(c) > 256 {
			return fmt.Errorf("%q: category %q repeated or over 256 bytes", f.GetName(), c)
		}
		seen[c] = true
	}
	if want := len(edges) + len(cats) + 1; len(f.GetCounts()) != want {
		return fmt.Errorf("%q: %d counts, want %d (one per bin, under/overflow or other included)", f.GetName(), len(f.GetCounts()), want)
	}
	return nil
}

// Validate checks a chunk's addressing and size; its content is checked
// against the manifest by the receiver.
func (m *Chunk) Validate() error {
	if err := CheckDigest(m.GetBundleDigest()); err != nil {
		return err
	}
	if len(m.GetSha256()) != 32 {
		return errors.New("sha256 must be 32 bytes")
	}
	if len(m.GetData()) == 0 || len(m.GetData()) > MaxChunkSize {
		return fmt.Errorf("data: %d bytes, want 1 to %d", len(m.GetData()), MaxChunkSize)
	}
	if m.GetFileIndex() >= MaxFiles || m.GetChunkIndex() >= MaxChunks {
		return errors.New("file_index or chunk_index out of range")
	}
	return nil
}

// Validate checks a chunk request.
func (m *ChunkRequest) Validate() error {
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	if err := CheckDigest(m.GetBundleDigest()); err != nil {
		return err
	}
	if len(m.GetRanges()) == 0 || len(m.GetRanges()) > maxChunkRanges {
		return fmt.Errorf("ranges: %d, want 1 to %d", len(m.GetRanges()), maxChunkRanges)
	}
	for i, r := range m.GetRanges() {
		if r.GetFileIndex() >= MaxFiles || r.GetCount() == 0 || uint64(r.GetFirst())+uint64(r.GetCount()) > MaxChunks {
			return fmt.Errorf("ranges[%d]: out of range", i)
		}
	}
	return nil
}

// Validate checks release metadata: role file names and sizes only; the
// signatures are the trust layer's to check.
func (m *ReleaseMetadata) Validate() error {
	md := m.GetMetadata()
	if len(md) == 0 || len(md) > maxMetadataRoles {
		return fmt.Errorf("metadata: %d roles, want 1 to %d", len(md), maxMetadataRoles)
	}
	for name, b := range md {
		if err := CheckBundlePath(name); err != nil || strings.Contains(name, "/") || len(name) > 128 {
			return fmt.Errorf("metadata: role file name %q must be one path segment of at most 128 bytes", name)
		}
		if len(b) == 0 || len(b) > maxRoleBytes {
			return fmt.Errorf("metadata %q: %d bytes, want 1 to %d", name, len(b), maxRoleBytes)
		}
	}
	return nil
}

// Validate checks a fetch progress report.
func (m *FetchProgress) Validate() error {
	if err := deviceID(m.GetDeviceId()); err != nil {
		return err
	}
	if err := CheckDigest(m.GetBundleDigest()); err != nil {
		return err
	}
	if _, ok := FetchProgress_State_name[int32(m.GetState())]; !ok || m.GetState() == FetchProgress_STATE_UNSPECIFIED {
		return fmt.Errorf("state %d: unknown", m.GetState())
	}
	if m.GetBytesHave() > m.GetBytesTotal() || m.GetChunksHave() > m.GetChunksTotal() {
		return errors.New("have exceeds total")
	}
	if r := m.GetRate(); r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
		return fmt.Errorf("rate %v: want a finite number ≥ 0", r)
	}
	if len(m.GetModel()) > 64 {
		return errors.New("model: over 64 bytes")
	}
	return text("error", m.GetError())
}
