package quarantine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

// DefaultMaxMessageBytes caps a stored message when no cap is configured.
const DefaultMaxMessageBytes = 50 << 20

// maxMetaBytes bounds a metadata file read back: metadata is a few kB; a
// bigger file is damaged, not something to load into memory.
const maxMetaBytes = 1 << 20

// orphanAge is how old a leftover of an interrupted write (a temporary file,
// a message without metadata) must be before Purge removes it: younger ones
// may belong to a Put still in progress.
const orphanAge = time.Hour

// File names inside the store: <id>.msg, <id>.json, and <name>.tmp while
// being written.
const (
	extMsg  = ".msg"
	extMeta = ".json"
	extTmp  = ".tmp"
)

// DirOptions configures OpenDir.
type DirOptions struct {
	// MaxMessageBytes caps a stored message (default DefaultMaxMessageBytes).
	MaxMessageBytes int64
	// Now is the store's clock (default time.Now); ids embed it.
	Now func() time.Time
}

// Dir is the file-system backend: for each item a message file and a JSON
// metadata file, mode 0600, in one directory. Every write goes to a
// temporary name, is fsynced, renamed into place, and the directory is
// fsynced; the metadata is written last, so an item that is listed always
// has its message. All access goes through an os.Root, so no name can reach
// outside the directory, and only validated ids become names. Changes to an
// item are serialised by a flock(2) on the store's lock file, which makes
// release exactly-once across processes on the host.
type Dir struct {
	root *os.Root
	path string
	max  int64
	now  func() time.Time
}

var _ Admin = (*Dir)(nil)

// OpenDir opens (creating it, mode 0700, if needed) the store at path.
func OpenDir(path string, opts DirOptions) (*Dir, error) {
	if path == "" {
		return nil, errors.New("quarantine dir: no directory configured")
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("quarantine dir: %w", err)
	}
	root, err := os.OpenRoot(path)
	if err != nil {
		return nil, fmt.Errorf("quarantine dir: %w", err)
	}
	s := &Dir{root: root, path: path, max: opts.MaxMessageBytes, now: opts.Now}
	if s.max <= 0 {
		s.max = DefaultMaxMessageBytes
	}
	if s.now == nil {
		s.now = time.Now
	}
	return s, nil
}

// Close releases the directory handle.
func (s *Dir) Close() error { return s.root.Close() }

// Path is the store's directory.
func (s *Dir) Path() string { return s.path }

// Put implements Store.
func (s *Dir) Put(ctx context.Context, m Meta, msg io.Reader) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("quarantine put: %w", err)
	}
	now := s.now()
	id, err := newID(now)
	if err != nil {
		return "", err
	}
	n, err := s.writeAtomic(id+extMsg, msg, s.max, true)
	if err != nil {
		return "", fmt.Errorf("quarantine put %s: %w", id, err)
	}
	if err := ctx.Err(); err != nil {
		_ = s.root.Remove(id + extMsg)
		return "", fmt.Errorf("quarantine put %s: %w", id, err)
	}
	prepare(&m, id, now)
	if m.Size == 0 {
		m.Size = n
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		_ = s.root.Remove(id + extMsg)
		return "", fmt.Errorf("quarantine put %s: %w", id, err)
	}
	if _, err := s.writeAtomic(id+extMeta, bytes.NewReader(b), maxMetaBytes, true); err != nil {
		_ = s.root.Remove(id + extMsg)
		return "", fmt.Errorf("quarantine put %s: %w", id, err)
	}
	return id, nil
}

// writeAtomic writes r to name via name.tmp: write, fsync, rename, fsync the
// directory. excl refuses an existing temporary file (new items); updates,
// which run under the lock, overwrite one left by a crash.
func (s *Dir) writeAtomic(name string, r io.Reader, max int64, excl bool) (int64, error) {
	tmp := name + extTmp
	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if excl {
		flags |= os.O_EXCL
	}
	f, err := s.root.OpenFile(tmp, flags, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, io.LimitReader(r, max+1))
	if err == nil && n > max {
		err = fmt.Errorf("%w (more than %d bytes)", ErrTooLarge, max)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = s.root.Rename(tmp, name)
	}
	if err == nil {
		err = s.syncDir()
	}
	if err != nil {
		_ = s.root.Remove(tmp)
		return 0, err
	}
	return n, nil
}

func (s *Dir) syncDir() error {
	d, err := s.root.Open(".")
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// openRegular opens name for reading only if it is a regular file: a symlink
// or device planted in the store is refused even if it points inside it.
func (s *Dir) openRegular(name string) (*os.File, fs.FileInfo, error) {
	li, err := s.root.Lstat(name)
	if err != nil {
		return nil, nil, err
	}
	if !li.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: not a regular file (%s)", name, li.Mode().Type())
	}
	f, err := s.root.Open(name)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil || !os.SameFile(li, fi) {
		f.Close()
		return nil, nil, fmt.Errorf("%s: replaced while opening", name)
	}
	return f, fi, nil
}

// readMeta reads and decodes an item's metadata.
func (s *Dir) readMeta(id string) (Meta, error) {
	f, _, err := s.openRegular(id + extMeta)
	if errors.Is(err, fs.ErrNotExist) {
		return Meta{}, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	if err != nil {
		return Meta{}, fmt.Errorf("%w: %s: %v", ErrDamaged, id, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxMetaBytes+1))
	if err != nil {
		return Meta{}, fmt.Errorf("quarantine %s: %w", id, err)
	}
	if len(b) > maxMetaBytes {
		return Meta{}, fmt.Errorf("%w: %s: metadata larger than %d bytes", ErrDamaged, id, maxMetaBytes)
	}
	return decodeMeta(id, b)
}

// Get implements Store.
func (s *Dir) Get(ctx context.Context, id string) (Meta, error) {
	if err := checkID(id); err != nil {
		return Meta{}, err
	}
	return s.readMeta(id)
}

// Open implements Store.
func (s *Dir) Open(ctx context.Context, id string) (io.ReadCloser, error) {
	if err := checkID(id); err != nil {
		return nil, err
	}
	// An item exists once its metadata does (a message alone is a leftover
	// of an interrupted Put).
	if _, err := s.root.Lstat(id + extMeta); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	f, _, err := s.openRegular(id + extMsg)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: message body is gone (deleted)", ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("quarantine open %s: %w", id, err)
	}
	return f, nil
}

// dirEntry is one name in the store split into id and suffix.
type dirEntry struct {
	id, ext string
}

// scan lists the store's names that belong to valid ids, sorted by id,
// newest first. Other names are ignored (never touched).
func (s *Dir) scan() ([]dirEntry, error) {
	d, err := s.root.Open(".")
	if err != nil {
		return nil, fmt.Errorf("quarantine list: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("quarantine list: %w", err)
	}
	out := make([]dirEntry, 0, len(names))
	for _, n := range names {
		if len(n) <= idLen || !ValidID(n[:idLen]) {
			continue
		}
		switch ext := n[idLen:]; ext {
		case extMsg, extMeta, extMsg + extTmp, extMeta + extTmp:
			out = append(out, dirEntry{id: n[:idLen], ext: ext})
		}
	}
	slices.SortFunc(out, func(a, b dirEntry) int { return strings.Compare(b.id, a.id) })
	return out, nil
}

// List implements Store. It reads metadata newest first and stops once a
// page is full, so the cost of a page grows with how far back it is, not
// with the size of the store (beyond reading the directory names).
func (s *Dir) List(ctx context.Context, f Filter) ([]Meta, string, error) {
	if err := checkFilter(f); err != nil {
		return nil, "", err
	}
	ents, err := s.scan()
	if err != nil {
		return nil, "", err
	}
	limit := limitOf(f)
	var out []Meta
	for _, e := range ents {
		if e.ext != extMeta || (f.Cursor != "" && e.id >= f.Cursor) {
			continue
		}
		if stopBefore(f, e.id) {
			break
		}
		if err := ctx.Err(); err != nil {
			return nil, "", fmt.Errorf("quarantine list: %w", err)
		}
		m, err := s.readMeta(e.id)
		switch {
		case errors.Is(err, ErrNotFound):
			continue // purged or deleted meanwhile
		case errors.Is(err, ErrDamaged):
			m = damagedMeta(e.id, err)
		case err != nil:
			return nil, "", err
		}
		if !f.Match(m) {
			continue
		}
		if len(out) == limit {
			return out, out[limit-1].ID, nil
		}
		out = append(out, m)
	}
	return out, "", nil
}

// stopBefore: ids are in store-time order, and Received is set when the
// message arrives, shortly before it is stored; an id well before Since
// cannot match, nor can any older one.
func stopBefore(f Filter, id string) bool {
	return !f.Since.IsZero() && idTime(id).Before(f.Since.Add(-time.Hour))
}

// Update implements Admin.
func (s *Dir) Update(ctx context.Context, id string, fn func(*Meta) error) (Meta, error) {
	if err := checkID(id); err != nil {
		return Meta{}, err
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return Meta{}, err
	}
	defer unlock()
	m, err := s.readMeta(id)
	if err != nil {
		return Meta{}, err
	}
	if err := fn(&m); err != nil {
		return Meta{}, err
	}
	if err := s.writeMeta(id, &m); err != nil {
		return Meta{}, err
	}
	return m, nil
}

func (s *Dir) writeMeta(id string, m *Meta) error {
	m.ID, m.Version, m.Damaged = id, MetaVersion, ""
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("quarantine %s: %w", id, err)
	}
	if _, err := s.writeAtomic(id+extMeta, bytes.NewReader(b), maxMetaBytes, false); err != nil {
		return fmt.Errorf("quarantine %s: %w", id, err)
	}
	return nil
}

// Delete implements Admin.
func (s *Dir) Delete(ctx context.Context, id string, ev Event) error {
	if err := checkID(id); err != nil {
		return err
	}
	unlock, err := s.lock(ctx)
	if err != nil {
		return err
	}
	defer unlock()
	m, err := s.readMeta(id)
	if err != nil {
		return err
	}
	if m.Status != StatusHeld && m.Status != StatusReleased {
		return fmt.Errorf("%w: %s is %s", ErrNotHeld, id, m.Status)
	}
	m.Status = StatusDeleted
	addEvent(&m, ev)
	if err := s.writeMeta(id, &m); err != nil {
		return err
	}
	if err := s.root.Remove(id + extMsg); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("quarantine delete %s: %w", id, err)
	}
	return s.syncDir()
}

// purgeBatch is how many removals run under one hold of the lock, so a long
// purge does not starve a reviewer's release.
const purgeBatch = 256

// Purge implements Admin. Age is the time the item was stored (encoded in
// its id). Temporary files and messages without metadata older than an hour
// (or than olderThan) are removed too.
func (s *Dir) Purge(ctx context.Context, olderThan time.Time) (int, error) {
	ents, err := s.scan()
	if err != nil {
		return 0, err
	}
	orphanCutoff := s.now().Add(-orphanAge)
	if olderThan.After(orphanCutoff) {
		orphanCutoff = olderThan
	}
	hasMeta := map[string]bool{}
	for _, e := range ents {
		if e.ext == extMeta {
			hasMeta[e.id] = true
		}
	}
	type victim struct {
		name string
		item bool
	}
	var victims []victim
	// Oldest first, metadata before its message, so an interrupted purge
	// never leaves a listed item without a message.
	for i := len(ents) - 1; i >= 0; i-- {
		e := ents[i]
		t := idTime(e.id)
		switch {
		case e.ext == extMeta && t.Before(olderThan):
			victims = append(victims, victim{e.id + extMeta, true})
		case e.ext == extMsg && hasMeta[e.id] && t.Before(olderThan):
			victims = append(victims, victim{e.id + extMsg, false})
		case e.ext != extMeta && !hasMeta[e.id] && t.Before(orphanCutoff):
			victims = append(victims, victim{e.id + e.ext, false})
		}
	}
	slices.SortStableFunc(victims, func(a, b victim) int {
		// Keep id order; within an id the .json sorts before the .msg.
		ai, bi := a.name[:idLen], b.name[:idLen]
		if c := strings.Compare(ai, bi); c != 0 {
			return c
		}
		return strings.Compare(a.name[idLen:], b.name[idLen:])
	})
	n := 0
	for start := 0; start < len(victims); start += purgeBatch {
		if err := ctx.Err(); err != nil {
			return n, fmt.Errorf("quarantine purge: %w", err)
		}
		unlock, err := s.lock(ctx)
		if err != nil {
			return n, err
		}
		for _, v := range victims[start:min(start+purgeBatch, len(victims))] {
			err := s.root.Remove(v.name)
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				unlock()
				return n, fmt.Errorf("quarantine purge: %w", err)
			}
			if err == nil && v.item {
				n++
			}
		}
		err = s.syncDir()
		unlock()
		if err != nil {
			return n, fmt.Errorf("quarantine purge: %w", err)
		}
	}
	return n, nil
}
