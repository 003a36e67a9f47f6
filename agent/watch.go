package agent

import (
	"context"
	"sort"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchFolder calls fn with the paths of the folder's entries that
// changed (created, written, removed, renamed, chmodded), batched: fn runs
// once the folder has been quiet for settle. It returns when ctx is done,
// or at once when the folder cannot be watched. fsnotify is not
// recursive: a change deep inside a subfolder is not seen (the sideload
// watcher checks for quiet itself).
func watchFolder(ctx context.Context, dir string, settle time.Duration, fn func(paths []string)) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	defer w.Close()
	if err := w.Add(dir); err != nil {
		return err
	}
	pending := map[string]bool{}
	var quiet *time.Timer
	var fire <-chan time.Time
	defer func() {
		if quiet != nil {
			quiet.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			pending[ev.Name] = true
			if quiet == nil {
				quiet = time.NewTimer(settle)
			} else {
				quiet.Reset(settle)
			}
			fire = quiet.C
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			// An overflowed event queue loses events: treat the whole
			// folder as changed.
			_ = err
			pending[dir] = true
			if quiet == nil {
				quiet = time.NewTimer(settle)
			} else {
				quiet.Reset(settle)
			}
			fire = quiet.C
		case <-fire:
			fire = nil
			paths := make([]string, 0, len(pending))
			for p := range pending {
				paths = append(paths, p)
			}
			sort.Strings(paths)
			clear(pending)
			fn(paths)
		}
	}
}
