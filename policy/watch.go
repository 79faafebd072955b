package policy

import (
	"context"
	"io/fs"
	"path/filepath"
	"strings"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchDebounce collects the burst of events an editor or `cp -r` makes
// into one reload.
const watchDebounce = 300 * time.Millisecond

// Watch reloads the policy when a file in the rules directory (or the allow
// file) changes, and calls onReload with the revision in use and the reload
// error (nil when the new rules were accepted). It blocks until ctx is done:
// run it in a goroutine. With the embedded rules and no allow file it only
// waits for ctx. Directories created later are watched too.
func (e *Engine) Watch(ctx context.Context, onReload func(rev string, err error)) {
	if onReload == nil {
		onReload = func(string, error) {}
	}
	if e.opts.Dir == "" && e.opts.AllowFile == "" {
		<-ctx.Done()
		return
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		onReload(e.Revision(), err)
		<-ctx.Done()
		return
	}
	defer w.Close()
	if e.opts.Dir != "" {
		addTree(w, e.opts.Dir)
	}
	if e.opts.AllowFile != "" {
		// Watch the directory: the allow file is replaced by rename.
		_ = w.Add(filepath.Dir(e.opts.AllowFile))
	}
	var timer *time.Timer
	var fire <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return
		case ev, ok := <-w.Events:
			if !ok {
				return
			}
			if !e.relevant(ev.Name) {
				continue
			}
			if ev.Has(fsnotify.Create) {
				addTree(w, ev.Name) // a new subdirectory
			}
			if timer == nil {
				timer = time.NewTimer(watchDebounce)
			} else {
				timer.Reset(watchDebounce)
			}
			fire = timer.C
		case err, ok := <-w.Errors:
			if !ok {
				return
			}
			onReload(e.Revision(), err)
		case <-fire:
			fire = nil
			err := e.Reload()
			onReload(e.Revision(), err)
		}
	}
}

// relevant reports whether a changed path can affect the policy.
func (e *Engine) relevant(name string) bool {
	if e.opts.AllowFile != "" && filepath.Clean(name) == filepath.Clean(e.opts.AllowFile) {
		return true
	}
	if e.opts.Dir == "" {
		return false
	}
	rel, err := filepath.Rel(e.opts.Dir, name)
	if err != nil || strings.HasPrefix(rel, "..") {
		return false
	}
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if strings.HasPrefix(part, "..data") {
			return true // Kubernetes ConfigMap update (atomic symlink swap)
		}
		if strings.HasPrefix(part, ".") && part != "." {
			return false // editor swap files, hidden dirs
		}
	}
	switch filepath.Ext(name) {
	case ".rego", ".json", ".yaml", ".yml", "":
		return true // "" : a directory appeared or vanished
	}
	return false
}

func addTree(w *fsnotify.Watcher, root string) {
	n := 0
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if p != root && strings.HasPrefix(d.Name(), ".") {
			return filepath.SkipDir
		}
		if n++; n > maxPolicyFiles {
			return filepath.SkipAll
		}
		_ = w.Add(p)
		return nil
	})
}
