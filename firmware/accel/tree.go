package accel

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The probes read a tree through these few functions. Paths are relative
// to root and written as the device sees them in errors ("/dev/hailo0").

// readFile reads root/rel; a missing file is (nil, false, nil).
func readFile(root, rel string) ([]byte, bool, error) {
	b, err := os.ReadFile(filepath.Join(root, rel))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read /%s: %w", rel, trimPathErr(err))
	}
	return b, true, nil
}

// exists reports whether root/rel exists (a folder counts).
func exists(root, rel string) bool {
	_, err := os.Stat(filepath.Join(root, rel))
	return err == nil
}

// isNode reports whether root/rel is a device node: a character device on
// a live system (root "/"); any non-folder in a recorded tree, where empty
// regular files stand in for nodes.
func isNode(root, rel string) bool {
	fi, err := os.Stat(filepath.Join(root, rel))
	if err != nil {
		return false
	}
	return nodeMode(fi.Mode(), filepath.Clean(root) == "/")
}

func nodeMode(m fs.FileMode, live bool) bool {
	if live {
		return m&fs.ModeCharDevice != 0
	}
	return !m.IsDir()
}

// list returns the sorted names in root/dir that start with prefix; a
// missing folder is an empty list.
func list(root, dir, prefix string) ([]string, error) {
	ents, err := os.ReadDir(filepath.Join(root, dir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list /%s: %w", dir, trimPathErr(err))
	}
	var names []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return names, nil
}

// linkBase returns the last element of the symbolic link root/rel's
// target, as sysfs driver links are read ("intel_vpu"); "" when it is not a
// link. Only the link is read, never followed, so a recorded tree needs no
// target.
func linkBase(root, rel string) string {
	t, err := os.Readlink(filepath.Join(root, rel))
	if err != nil {
		return ""
	}
	return filepath.Base(t)
}

// version reads a one-line version file such as /sys/module/X/version:
// "" when the file is missing, ErrMalformed when it is empty or holds
// anything but a short version string.
func version(root, rel string) (string, error) {
	b, ok, err := readFile(root, rel)
	if err != nil || !ok {
		return "", err
	}
	v := strings.TrimSpace(string(b))
	if !validVersion(v) {
		return "", fmt.Errorf("/%s: %w version %q", rel, ErrMalformed, clip(v))
	}
	return v, nil
}

func validVersion(v string) bool {
	if v == "" || len(v) > 64 {
		return false
	}
	for _, c := range v {
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.ContainsRune(".+-_~:", c)
		if !ok {
			return false
		}
	}
	return true
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// trimPathErr drops the *fs.PathError's host path (the test root), keeping
// its cause; the caller names the path as the device sees it.
func trimPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
