package demo

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flotilla-edge/flotilla/controlplane/api"
	"github.com/flotilla-edge/flotilla/controlplane/apiclient"
)

// Pixels per digits row (8×8).
const pixels = 64

// Limits on the dataset files read: the demo reads them whole.
const (
	maxCSV  = 8 << 20
	maxRows = 20000
)

// dataset is the digits test split: pixel rows and, for the golden check,
// the model's expected probabilities for the first rows.
type dataset struct {
	test     [][]float64
	expected [][]float64
}

func loadDataset(dir string) (*dataset, error) {
	test, err := readCSV(filepath.Join(dir, "test.csv"), true, pixels+1)
	if err != nil {
		return nil, err
	}
	expected, err := readCSV(filepath.Join(dir, "test_expected.csv"), false, 10)
	if err != nil {
		return nil, err
	}
	if len(test) < 4 || len(expected) < 4 {
		return nil, fmt.Errorf("demo: %s: too few rows for a golden check", dir)
	}
	ds := &dataset{expected: expected}
	for _, r := range test {
		ds.test = append(ds.test, r[:pixels]) // the last column is the label
	}
	return ds, nil
}

// readCSV reads a numeric CSV file of width columns, at most maxCSV bytes
// and maxRows rows.
func readCSV(path string, header bool, width int) ([][]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxCSV+1))
	if err != nil {
		return nil, fmt.Errorf("demo: %s: %w", path, err)
	}
	if len(b) > maxCSV {
		return nil, fmt.Errorf("demo: %s is over %d bytes", path, maxCSV)
	}
	r := csv.NewReader(bytes.NewReader(b))
	r.FieldsPerRecord = width
	recs, err := r.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("demo: %s: %w", path, err)
	}
	if header && len(recs) > 0 {
		recs = recs[1:]
	}
	if len(recs) > maxRows {
		return nil, fmt.Errorf("demo: %s has over %d rows", path, maxRows)
	}
	out := make([][]float64, 0, len(recs))
	for i, rec := range recs {
		row := make([]float64, width)
		for j, s := range rec {
			if row[j], err = strconv.ParseFloat(strings.TrimSpace(s), 64); err != nil {
				return nil, fmt.Errorf("demo: %s row %d column %d: %w", path, i+1, j+1, err)
			}
		}
		out = append(out, row)
	}
	return out, nil
}

// shift is what the shifted traffic does to a row: a washed-out camera,
// contrast halved and the background lifted. Blank pixels, constant in
// the training data, are no longer blank: the drift scores rise far past
// their thresholds.
func shift(row []float64) []float64 {
	out := make([]float64, len(row))
	for i, v := range row {
		out[i] = 0.3 + 0.5*v
	}
	return out
}

func (ds *dataset) sampleJSON() string {
	parts := make([]string, len(ds.test[0]))
	for i, v := range ds.test[0] {
		parts[i] = strconv.FormatFloat(v, 'g', 4, 64)
	}
	return strings.Join(parts, ",")
}

// Counts are inferences sent, by outcome.
type Counts struct {
	OK, NotServing, Failed atomic.Uint64
}

// Traffic sends test-split rows to every agent's local inference API, one
// row per request, RatePerDevice per second each (unpaced at 0), until ctx
// ends. While shifted is true the rows are shifted (shift). An agent not
// yet serving the model answers 404 or 503, counted as NotServing.
func (d *Demo) Traffic(ctx context.Context, shifted *atomic.Bool, c *Counts) {
	hc := &http.Client{Timeout: 10 * time.Second}
	var wg sync.WaitGroup
	for i, base := range d.inferURLs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var every time.Duration
			if d.cfg.RatePerDevice > 0 {
				every = time.Duration(float64(time.Second) / d.cfg.RatePerDevice)
			}
			next := time.Now()
			for n := i * 97; ctx.Err() == nil; n++ {
				row := d.rows.test[n%len(d.rows.test)]
				if shifted.Load() {
					row = shift(row)
				}
				switch code, err := infer(ctx, hc, base, row); {
				case err != nil:
					if ctx.Err() == nil {
						c.Failed.Add(1)
					}
				case code == http.StatusOK:
					c.OK.Add(1)
				case code == http.StatusNotFound || code == http.StatusServiceUnavailable:
					c.NotServing.Add(1)
					_ = sleep(ctx, 200*time.Millisecond)
				default:
					c.Failed.Add(1)
				}
				if every > 0 {
					next = next.Add(every)
					if wait := time.Until(next); wait > 0 {
						_ = sleep(ctx, wait)
					} else {
						next = time.Now()
					}
				}
			}
		}()
	}
	wg.Wait()
}

// infer posts one row to base's KServe v2 API and returns the status.
func infer(ctx context.Context, hc *http.Client, base string, row []float64) (int, error) {
	body, err := json.Marshal(map[string]any{"inputs": []any{map[string]any{
		"name": "pixels", "datatype": "FP32", "shape": []int{1, pixels}, "data": row}}})
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v2/models/digits/infer", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, nil
}

// Drift is the merged drift report of digits release 1 over every device
// for windows from from on.
func (d *Demo) Drift(ctx context.Context, from time.Time) (api.ReleaseDrift, bool, error) {
	r, err := d.Client.Drift(ctx, apiclient.DriftOptions{Model: "digits", Release: 1, From: from, To: time.Now().Add(time.Minute)})
	if err != nil {
		return api.ReleaseDrift{}, false, err
	}
	for _, rd := range r.Releases {
		if rd.Release == 1 {
			return rd, true, nil
		}
	}
	return api.ReleaseDrift{}, false, nil
}

// Rollout is the demo rollout's view.
func (d *Demo) Rollout(ctx context.Context) (api.RolloutView, error) {
	return d.Client.Rollout(ctx, d.RolloutID, false)
}

func sortedKeys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
