package wasm

import (
	"fmt"
	"io"
	"os"

	"github.com/flotilla-edge/flotilla/runtime"
)

// readEntry reads spec.Entry inside spec.Dir, refusing paths and symbolic
// links that leave the folder and files over max bytes.
func readEntry(spec runtime.LoadSpec, max int64) ([]byte, error) {
	if spec.Dir == "" || spec.Entry == "" {
		return nil, fmt.Errorf("%w: load spec needs a slot folder and an entry", runtime.ErrInvalidInput)
	}
	f, err := os.OpenInRoot(spec.Dir, spec.Entry)
	if err != nil {
		return nil, fmt.Errorf("wasm: open %q in slot: %w", spec.Entry, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("wasm: stat %q: %w", spec.Entry, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %q is not a regular file", runtime.ErrInvalidInput, spec.Entry)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%w: module %q is %d bytes, limit %d", ErrTooLarge, spec.Entry, st.Size(), max)
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("wasm: read %q: %w", spec.Entry, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%w: module %q grew past %d bytes while read", ErrTooLarge, spec.Entry, max)
	}
	return b, nil
}
