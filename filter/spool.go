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
	mem      []byte // the message while in memory; its capacity is reserved
	memLimit int64
	budget   *MemoryBudget
	reserved int64 // == cap(mem) while mem is held
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

// spoolBufs keeps the in-memory buffers of small messages. What a pooled
// buffer holds is unused memory outside the budget, so only buffers of the
// initial size are kept: with larger ones, 200 sessions spilling at once
// parked 50 MiB in the pool (mxload large).
var spoolBufs = sync.Pool{New: func() any { b := make([]byte, 0, spoolBufInitial); return &b }}

// spoolBufInitial is the first in-memory buffer of a message: a typical
// message fits.
const spoolBufInitial = 16 << 10

func newSpool(memLimit int64, dir string, budget *MemoryBudget) *spool {
	return &spool{memLimit: memLimit, dir: dir, budget: budget}
}

func (s *spool) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if s.f == nil && !s.grow(len(p)) {
		if err := s.spill(); err != nil {
			s.err = err
			return 0, err
		}
	}
	var n int
	var err error
	if s.f != nil {
		n, err = s.f.Write(p)
	} else {
		s.mem = append(s.mem, p...)
		n = len(p)
	}
	s.size += int64(n)
	if err != nil {
		s.err = fmt.Errorf("spool: %w", err)
	}
	return n, s.err
}

// grow makes room in memory for n more bytes, reserving from the budget
// whatever capacity it adds: the budget counts the memory held, not just
// the bytes written, because a growing buffer can hold up to twice them.
// false: the message goes to a file instead.
func (s *spool) grow(n int) bool {
	need := int64(len(s.mem)) + int64(n)
	if need > s.memLimit {
		return false
	}
	if need <= int64(cap(s.mem)) {
		return true
	}
	if s.mem == nil && need <= spoolBufInitial {
		bp := spoolBufs.Get().(*[]byte)
		if c := int64(cap(*bp)); c > s.memLimit || c < need {
			b := make([]byte, 0, min(spoolBufInitial, s.memLimit))
			bp = &b
		}
		if !s.budget.reserve(int64(cap(*bp))) {
			spoolBufs.Put(bp)
			return false
		}
		s.mem, s.reserved = (*bp)[:0], int64(cap(*bp))
		return true
	}
	c := max(need, 2*int64(cap(s.mem)), spoolBufInitial)
	c = min(c, s.memLimit)
	if !s.budget.reserve(c - s.reserved) {
		return false
	}
	m := make([]byte, len(s.mem), c)
	copy(m, s.mem)
	recycle(s.mem)
	s.mem, s.reserved = m, c // the reservation now covers m
	return true
}

// putMem gives up the in-memory buffer and its reservation.
func (s *spool) putMem() {
	recycle(s.mem)
	s.mem = nil
	s.budget.release(s.reserved)
	s.reserved = 0
}

func recycle(b []byte) {
	if b != nil && cap(b) == spoolBufInitial {
		b = b[:0]
		spoolBufs.Put(&b)
	}
}

// spill moves what is in memory to a temporary file and frees the buffer
// at once: a spilled message must not keep memory the budget no longer
// counts (mxload large found 200 spilled sessions pinning 1 MiB each).
func (s *spool) spill() error {
	f, err := os.CreateTemp(s.dir, spoolPrefix+"*")
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	if _, err := f.Write(s.mem); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("spool: %w", err)
	}
	s.f = f
	s.putMem()
	return nil
}

// Size is the number of bytes written.
func (s *spool) Size() int64 { return s.size }

// ReaderAt gives random access to what was written.
func (s *spool) ReaderAt() io.ReaderAt {
	if s.f != nil {
		return s.f
	}
	return bytes.NewReader(s.mem)
}

// Section returns a reader over [off, size).
func (s *spool) Section(off int64) *io.SectionReader {
	return io.NewSectionReader(s.ReaderAt(), off, s.size-off)
}

// Head returns the header section (through the blank line that ends it)
// or, when there is none within n bytes, the first n bytes. From a file it
// reads only as far as the header goes: a buffer of n (1 MiB by default)
// per spilled message would live outside the memory budget.
func (s *spool) Head(n int) ([]byte, error) {
	if s.f == nil {
		b := s.mem
		if len(b) > n {
			b = b[:n]
		}
		return b, nil
	}
	limit := int(min(int64(n), s.size))
	buf := make([]byte, 0, min(limit, headChunk))
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(cap(buf), limit-len(buf)))...)[:len(buf)]
		}
		from := len(buf)
		k, err := s.f.ReadAt(buf[from:cap(buf)], int64(from))
		buf = buf[:from+k]
		if end := headerEnd(buf, max(from-3, 0)); end >= 0 {
			return buf[:end], nil
		}
		if err == io.EOF || k == 0 {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("spool: %w", err)
		}
	}
	return buf, nil
}

// headChunk is the first read of a spilled message's header: most headers
// are a few KiB.
const headChunk = 16 << 10

// headerEnd is the offset just past the blank line that ends the header
// section in b (searching from from), or -1. A message may start with the
// blank line (no header fields).
func headerEnd(b []byte, from int) int {
	if from == 0 {
		if bytes.HasPrefix(b, []byte("\r\n")) {
			return 2
		}
		if bytes.HasPrefix(b, []byte("\n")) {
			return 1
		}
	}
	for i := from; i < len(b); {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return -1
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
	return -1
}

// Close releases the memory and removes the temporary file.
func (s *spool) Close() {
	if s.f != nil {
		name := s.f.Name()
		s.f.Close()
		os.Remove(name)
		s.f = nil
	}
	s.putMem()
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
