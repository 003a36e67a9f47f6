// Package baseline computes a bundle's drift baseline from reference data:
// for each input feature, quantile bin edges (duplicates removed, with
// underflow and overflow bins) and the reference histogram over them; the
// same for the model's predictions when the data carries them; and the
// thresholds the reference data's own window-to-window variability implies
// (mean + 3σ of each score over reference windows, as NannyML sets them).
//
// `flotctl bundle build --baseline DATA.csv` writes the result into the
// manifest. Running the model to get its predictions on the reference data
// is left to the caller: a column of predictions (PredictionColumn) is
// read from the CSV.
package baseline

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"

	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/proto/summary"
)

// Limits on the reference data, so a hostile or mistaken file fails
// cleanly instead of exhausting memory.
const (
	MaxRows    = 1_000_000
	MaxColumns = 1024
	MaxCells   = 64 << 20
)

// ErrData marks reference data that cannot make a baseline.
var ErrData = errors.New("bad reference data")

// Options say how to read the data and bin it.
type Options struct {
	// Features are the columns to monitor, in order; empty: every column
	// but Exclude and PredictionColumn.
	Features []string
	// Exclude names columns never monitored (e.g. "label").
	Exclude []string
	// Tensor is the input tensor the features are read from: feature i is
	// element i of one row, by its column position among Features.
	Tensor string
	// PredictionColumn holds the model's prediction for each row; empty:
	// no prediction baseline. Predictions with at most MaxCategories
	// distinct values are categorical, otherwise numeric.
	PredictionColumn string
	// Bins is the number of quantile bins per numeric feature before
	// duplicate edges are removed; 10.
	Bins int
	// WindowRecords is the window size the variability thresholds are
	// computed for, and the minimum a window needs to be scored; 100.
	WindowRecords int
	// Seed draws the reference windows (fixed, so a build is
	// reproducible); 1.
	Seed uint64
	// Monitor, when set, is the bundle's monitor function: the feature
	// columns of a row are its raw input, in order, and the features
	// monitored are its results (Tensor must then be empty). A row it
	// fails on fails the baseline.
	Monitor Monitor
	// MonitorNames name the function's results; result i without a name
	// is "monitor.i".
	MonitorNames []string
}

// Monitor maps the values of one reference row's feature columns to the
// monitored features (see MonitorFromBundle).
type Monitor func(row []float64) ([]float64, error)

// MaxCategories is the most distinct prediction values treated as
// categories.
const MaxCategories = 64

// Result is the computed baseline.
type Result struct {
	Drift *pb.DriftBaseline
	// Variability is mean + 3σ of the worst score per reference window;
	// nil with fewer than two windows.
	Variability *pb.DriftThresholds
	MinRecords  uint64
	Rows        int
	Windows     int
}

// FromCSV computes the baseline of the CSV in r: a header row of column
// names, then one numeric row per record ("", "nan" and "NaN" are missing
// or NaN; "inf" and "-inf" are infinities).
func FromCSV(r io.Reader, opt Options) (*Result, error) {
	if opt.Bins <= 0 {
		opt.Bins = 10
	}
	if opt.Bins > 1000 {
		return nil, fmt.Errorf("%w: %d bins, at most 1000", ErrData, opt.Bins)
	}
	if opt.WindowRecords <= 0 {
		opt.WindowRecords = 100
	}
	if opt.Seed == 0 {
		opt.Seed = 1
	}
	cr := csv.NewReader(r)
	cr.ReuseRecord = false
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrData, err)
	}
	if len(header) > MaxColumns {
		return nil, fmt.Errorf("%w: %d columns, at most %d", ErrData, len(header), MaxColumns)
	}
	col := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(h)
		if h == "" || len(h) > 256 {
			return nil, fmt.Errorf("%w: column %d has no name or one over 256 bytes", ErrData, i+1)
		}
		if _, dup := col[h]; dup {
			return nil, fmt.Errorf("%w: column %q repeated", ErrData, h)
		}
		col[h] = i
	}
	feats := opt.Features
	if len(feats) == 0 {
		for _, h := range header {
			h = strings.TrimSpace(h)
			if h != opt.PredictionColumn && !slices.Contains(opt.Exclude, h) {
				feats = append(feats, h)
			}
		}
	}
	if len(feats) == 0 || (len(feats) > pb.MaxSummaryFeatures && opt.Monitor == nil) {
		return nil, fmt.Errorf("%w: %d features to monitor, want 1 to %d", ErrData, len(feats), pb.MaxSummaryFeatures)
	}
	idx := make([]int, len(feats))
	for i, f := range feats {
		c, ok := col[f]
		if !ok {
			return nil, fmt.Errorf("%w: no column %q", ErrData, f)
		}
		idx[i] = c
	}
	predCol := -1
	if opt.PredictionColumn != "" {
		c, ok := col[opt.PredictionColumn]
		if !ok {
			return nil, fmt.Errorf("%w: no prediction column %q", ErrData, opt.PredictionColumn)
		}
		predCol = c
	}
	if opt.Monitor != nil && opt.Tensor != "" {
		return nil, fmt.Errorf("%w: a monitor function's features read no tensor (%q given)", ErrData, opt.Tensor)
	}
	// Column-major values, and the prediction column.
	values := make([][]float64, len(feats))
	var preds []float64
	rows := 0
	mon := monitorRows{fn: opt.Monitor, names: opt.MonitorNames}
	row := make([]float64, len(feats))
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		line, _ := cr.FieldPos(0)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrData, err)
		}
		if rows++; rows > MaxRows || rows*len(header) > MaxCells {
			return nil, fmt.Errorf("%w: over %d rows or %d cells", ErrData, MaxRows, MaxCells)
		}
		for i, c := range idx {
			v, err := parseValue(rec[c])
			if err != nil {
				return nil, fmt.Errorf("%w: line %d, column %q: %v", ErrData, line, feats[i], err)
			}
			if mon.fn != nil {
				row[i] = v
				continue
			}
			values[i] = append(values[i], v)
		}
		if mon.fn != nil {
			if err := mon.add(row); err != nil {
				return nil, fmt.Errorf("%w: line %d: %v", ErrData, line, err)
			}
		}
		if predCol >= 0 {
			v, err := parseValue(rec[predCol])
			if err != nil {
				return nil, fmt.Errorf("%w: line %d, column %q: %v", ErrData, line, opt.PredictionColumn, err)
			}
			preds = append(preds, v)
		}
	}
	if rows < 2 {
		return nil, fmt.Errorf("%w: %d rows; a baseline needs at least 2", ErrData, rows)
	}
	if mon.fn != nil {
		feats, values = mon.names, mon.values
	}
	d := &pb.DriftBaseline{}
	for i, f := range feats {
		edges := summary.QuantileEdges(values[i], opt.Bins)
		if edges == nil {
			return nil, fmt.Errorf("%w: column %q has no finite value", ErrData, f)
		}
		fb := &pb.FeatureBaseline{Name: f, Tensor: opt.Tensor, Index: uint32(i), BinEdges: edges}
		fb.Counts = summary.NewBinner(fb).Histogram(values[i])
		d.Features = append(d.Features, fb)
	}
	if predCol >= 0 {
		p, err := predictionBaseline(opt.PredictionColumn, preds, opt.Bins)
		if err != nil {
			return nil, err
		}
		d.Prediction = p
	}
	d.MinWindowRecords = uint32(opt.WindowRecords)
	res := &Result{Drift: d, MinRecords: uint64(opt.WindowRecords), Rows: rows}
	res.Variability, res.Windows = variability(d, values, preds, opt)
	if res.Variability != nil {
		d.Thresholds = res.Variability
	}
	return res, nil
}

func parseValue(s string) (float64, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "", "nan":
		return math.NaN(), nil
	}
	return strconv.ParseFloat(s, 64)
}

func predictionBaseline(name string, preds []float64, bins int) (*pb.FeatureBaseline, error) {
	distinct := map[float64]bool{}
	for _, v := range preds {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			distinct[v] = true
		}
	}
	fb := &pb.FeatureBaseline{Name: name}
	if len(distinct) == 0 {
		return nil, fmt.Errorf("%w: prediction column %q has no finite value", ErrData, name)
	}
	if len(distinct) <= MaxCategories {
		vs := make([]float64, 0, len(distinct))
		for v := range distinct {
			vs = append(vs, v)
		}
		sort.Float64s(vs)
		for _, v := range vs {
			fb.Categories = append(fb.Categories, strconv.FormatFloat(v, 'g', -1, 64))
		}
	} else {
		fb.BinEdges = summary.QuantileEdges(preds, bins)
	}
	fb.Counts = summary.NewBinner(fb).Histogram(preds)
	return fb, nil
}

// variability draws reference windows of WindowRecords rows (without
// replacement within a window; at least 200 windows, or every row's worth
// of windows if more), scores each against the baseline, and returns mean
// + 3σ of each window's worst score. More windows than the data splits
// into steady the estimate of σ.
func variability(d *pb.DriftBaseline, values [][]float64, preds []float64, opt Options) (*pb.DriftThresholds, int) {
	n := len(values[0])
	if n < opt.WindowRecords {
		return nil, 0
	}
	windows := max(200, n/opt.WindowRecords)
	r := rand.New(rand.NewPCG(opt.Seed, 0x5eed))
	var scores []*pb.DriftScores
	meta := summary.Meta{Model: "reference"}
	th := summary.EffectiveThresholds(nil, nil)
	feats := make([]float64, len(values))
	for range windows {
		w := summary.NewWindow(meta, d, 0)
		for _, row := range r.Perm(n)[:opt.WindowRecords] {
			for i := range values {
				feats[i] = values[i][row]
			}
			rec := summary.Record{OK: true, Features: feats}
			if preds != nil {
				rec.Prediction, rec.HasPrediction = preds[row], true
			}
			w.Add(rec)
		}
		scores = append(scores, summary.Score(d, w.Summary(1), th, 1))
	}
	return summary.Variability(scores), len(scores)
}
