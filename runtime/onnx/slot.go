package onnx

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/flotilla-edge/flotilla/runtime"
)

// slotFile resolves entry inside the slot folder dir and returns its path.
// It refuses absolute paths, "..", and symbolic links that lead outside dir
// (os.Root resolves them confined to the folder).
func slotFile(dir, entry string) (string, error) {
	if dir == "" || entry == "" {
		return "", fmt.Errorf("%w: load needs a slot folder and an entry file", runtime.ErrInvalidInput)
	}
	if !filepath.IsLocal(entry) {
		return "", fmt.Errorf("%w: entry %q is not a path inside the slot", runtime.ErrInvalidInput, entry)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return "", fmt.Errorf("%w: open slot: %w", runtime.ErrInvalidInput, err)
	}
	defer root.Close()
	fi, err := root.Stat(entry)
	if err != nil {
		return "", fmt.Errorf("%w: model file: %w", runtime.ErrInvalidInput, err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("%w: model file %q is not a regular file", runtime.ErrInvalidInput, entry)
	}
	// The symlinks along the way resolve inside the slot (root.Stat checked);
	// ONNX Runtime opens the file by path.
	return filepath.Join(dir, entry), nil
}
