package baseline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/flotilla-edge/flotilla/controlplane/bundle"
	pb "github.com/flotilla-edge/flotilla/proto/flotillapb"
	"github.com/flotilla-edge/flotilla/runtime/wasm/monitorfn"
)

// monitorRows collects a monitor function's results over the reference
// rows, column-major, as FromCSV collects columns.
type monitorRows struct {
	fn     Monitor
	names  []string // given names, then the names of the results
	values [][]float64
}

// add runs the function on one row. The first row fixes the number of
// results; every later row must give as many.
func (m *monitorRows) add(row []float64) error {
	out, err := m.fn(row)
	if err != nil {
		return fmt.Errorf("monitor function: %w", err)
	}
	if m.values == nil {
		if len(out) == 0 || len(out) > pb.MaxSummaryFeatures {
			return fmt.Errorf("monitor function gave %d results, want 1 to %d", len(out), pb.MaxSummaryFeatures)
		}
		if len(m.names) > len(out) {
			return fmt.Errorf("%d monitor names for %d results", len(m.names), len(out))
		}
		m.values = make([][]float64, len(out))
		for i := len(m.names); i < len(out); i++ {
			m.names = append(m.names, "monitor."+strconv.Itoa(i))
		}
	}
	if len(out) != len(m.values) {
		return fmt.Errorf("monitor function gave %d results, %d for the first row", len(out), len(m.values))
	}
	for i, v := range out {
		m.values[i] = append(m.values[i], v)
	}
	return nil
}

// MonitorFromBundle loads the monitor function of the bundle in folder
// dir, whose manifest is m, to run over reference rows as a device runs it
// (runtime/wasm/monitorfn): each row's values are encoded as the first
// input's dtype, and must fill one row of its shape where that is fixed.
// Close releases it. Without a monitor in m it returns nil, nil.
func MonitorFromBundle(ctx context.Context, dir string, m *pb.BundleManifest, cfg monitorfn.Config) (*BundleMonitor, error) {
	mon := m.GetMonitor()
	if mon == nil {
		return nil, nil
	}
	if len(m.GetInputs()) == 0 {
		return nil, errors.New("monitor: the manifest names no input")
	}
	in := m.GetInputs()[0]
	width := 1
	for _, d := range in.GetShape()[min(1, len(in.GetShape())):] {
		if d <= 0 {
			width = -1 // not fixed
			break
		}
		width *= int(d)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	defer root.Close()
	f, err := root.Open(filepath.FromSlash(mon.GetFile()))
	if err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	defer f.Close()
	const limit = 16 << 20
	code, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("monitor: %w", err)
	}
	if len(code) > limit {
		return nil, fmt.Errorf("monitor: %s is over %d bytes", mon.GetFile(), limit)
	}
	fn, err := monitorfn.Load(ctx, code, mon.GetExport(), cfg)
	if err != nil {
		return nil, fmt.Errorf("monitor %s: %w", mon.GetFile(), err)
	}
	return &BundleMonitor{fn: fn, dtype: in.GetDtype(), width: width, input: in.GetName()}, nil
}

// BundleMonitor is a bundle's monitor function over reference rows.
type BundleMonitor struct {
	fn    *monitorfn.Function
	dtype int32
	width int // elements in one input row; -1: not fixed
	input string
}

// Features runs the function on one row's values (a Monitor).
func (b *BundleMonitor) Features(row []float64) ([]float64, error) {
	if b.width >= 0 && len(row) != b.width {
		return nil, fmt.Errorf("%d values for a row of input %q, which has %d", len(row), b.input, b.width)
	}
	raw, err := bundle.EncodeValues(b.dtype, row)
	if err != nil {
		return nil, err
	}
	return b.fn.Call(context.Background(), raw)
}

// Close releases the function.
func (b *BundleMonitor) Close() error { return b.fn.Close() }
