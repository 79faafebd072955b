package filter

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// spoolPrefix names our temporary files so that a restart can remove the
// ones a crash left behind without touching anything else in the directory.
const spoolPrefix = "mxguard-spool-"

// spool holds one message while it is checked: in memory up to memLimit,
// then in a temporary file. The message is written once and read several
// times (headers, DKIM, MIME facts, relay) through ReaderAt, so the body is
// never copied in memory after it arrived.
type spool struct {
	mem      *bytes.Buffer
	memLimit int64
	budget   *MemoryBudget
	reserved int64
	dir      string
	f        *os.File
	size     int64
	err      error
}

// MemoryBudget bounds the bytes all spools hold in memory together: when
// it is used up, new message bytes go to temporary files, so many large
// messages at once cannot exhaust memory.
type MemoryBudget struct {
	max  int64
	used atomic.Int64
}

// NewMemoryBudget allows max bytes in memory across all messages (0: no
// global bound beyond the per-message limit).
func NewMemoryBudget(max int64) *MemoryBudget { return &MemoryBudget{max: max} }

// Used reports the bytes currently held.
func (b *MemoryBudget) Used() int64 {
	if b == nil {
		return 0
	}
	return b.used.Load()
}

func (b *MemoryBudget) reserve(n int64) bool {
	if b == nil || b.max <= 0 {
		return true
	}
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *MemoryBudget) release(n int64) {
	if b != nil && b.max > 0 && n > 0 {
		b.used.Add(-n)
	}
}

var spoolBufs = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func newSpool(memLimit int64, dir string, budget *MemoryBudget) *spool {
	b := spoolBufs.Get().(*bytes.Buffer)
	b.Reset()
	return &spool{mem: b, memLimit: memLimit, dir: dir, budget: budget}
}

func (s *spool) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.f == nil {
		n := int64(len(p))
		if int64(s.mem.Len())+n > s.memLimit || !s.budget.reserve(n) {
			if err := s.spill(); err != nil {
				s.err = err
				return 0, err
			}
		} else {
			s.reserved += n
		}
	}
	var n int
	var err error
	if s.f != nil {
		n, err = s.f.Write(p)
	} else {
		n, err = s.mem.Write(p)
	}
	s.size += int64(n)
	if err != nil {
		s.err = fmt.Errorf("spool: %w", err)
	}
	return n, s.err
}

func (s *spool) spill() error {
	f, err := os.CreateTemp(s.dir, spoolPrefix+"*")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if _, err := f.Write(s.mem.Bytes()); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("spool: %w", err)
	}
	s.f = f
	s.mem.Reset()
	s.budget.release(s.reserved)
	s.reserved = 0
	return nil
}

// Size is the number of bytes written.
func (s *spool) Size() int64 { return s.size }

// ReaderAt gives random access to what was written.
func (s *spool) ReaderAt() io.ReaderAt {
	if s.f != nil {
		return s.f
	}
	return bytes.NewReader(s.mem.Bytes())
}

// Section returns a reader over [off, size).
func (s *spool) Section(off int64) *io.SectionReader {
	return io.NewSectionReader(s.ReaderAt(), off, s.size-off)
}

// Bytes returns up to n bytes from the start (the header section).
func (s *spool) Head(n int) ([]byte, error) {
	if s.f == nil {
		b := s.mem.Bytes()
		if len(b) > n {
			b = b[:n]
		}
		return b, nil
	}
	buf := make([]byte, min(int64(n), s.size))
	k, err := s.f.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("spool: %w", err)
	}
	return buf[:k], nil
}

// Close releases the memory and removes the temporary file.
func (s *spool) Close() {
	if s.f != nil {
		name := s.f.Name()
		s.f.Close()
		os.Remove(name)
		s.f = nil
	}
	s.budget.release(s.reserved)
	s.reserved = 0
	if s.mem != nil {
		// Do not pool huge buffers: they would pin memory after a burst.
		if s.mem.Cap() <= 4<<20 {
			spoolBufs.Put(s.mem)
		}
		s.mem = nil
	}
}

// CleanSpoolDir removes temporary files a crash left behind in dir.
func CleanSpoolDir(dir string) (int, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("spool dir %s: %w", dir, err)
	}
	n := 0
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), spoolPrefix) {
			if os.Remove(filepath.Join(dir, e.Name())) == nil {
				n++
			}
		}
	}
	return n, nil
}
