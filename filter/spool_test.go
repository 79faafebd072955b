package filter

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

// TestMemoryBudgetSpills: once the shared budget is used, the next message
// goes to disk; closing gives the bytes back and removes the file.
func TestMemoryBudgetSpills(t *testing.T) {
	dir := t.TempDir()
	budget := NewMemoryBudget(40 << 10)
	a := newSpool(1<<20, dir, budget)
	a.Write(bytes.Repeat([]byte("a"), 800))
	// The budget counts the buffer held (16 KiB), not the 800 bytes in it.
	if a.f != nil || budget.Used() != spoolBufInitial {
		t.Fatalf("first spool: file=%v used=%d", a.f != nil, budget.Used())
	}
	b := newSpool(1<<20, dir, budget)
	b.Write(bytes.Repeat([]byte("b"), 10<<10))
	b.Write(bytes.Repeat([]byte("b"), 20<<10))
	if b.f == nil {
		t.Fatal("second spool stayed in memory past the budget")
	}
	if budget.Used() != spoolBufInitial {
		t.Fatalf("used %d: the spilled spool kept its reservation", budget.Used())
	}
	if b.mem != nil {
		t.Fatal("the spilled spool kept its memory buffer")
	}
	got, _ := io.ReadAll(b.Section(0))
	if string(got) != strings.Repeat("b", 30<<10) {
		t.Fatalf("spilled content %q", got)
	}
	name := b.f.Name()
	b.Close()
	a.Close()
	if budget.Used() != 0 {
		t.Fatalf("budget not returned: %d", budget.Used())
	}
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Fatalf("spool file left behind: %v", err)
	}
}

// TestSpoolPerMessageLimit: a message larger than the per-message memory
// limit spills and keeps its bytes in order.
func TestSpoolPerMessageLimit(t *testing.T) {
	s := newSpool(100, t.TempDir(), nil)
	defer s.Close()
	s.Write([]byte(strings.Repeat("x", 60)))
	s.Write([]byte(strings.Repeat("y", 60)))
	if s.f == nil || s.Size() != 120 {
		t.Fatalf("file=%v size=%d", s.f != nil, s.Size())
	}
	head, _ := s.Head(70)
	if string(head) != strings.Repeat("x", 60)+strings.Repeat("y", 10) {
		t.Fatalf("head %q", head)
	}
}

// TestSpoolReservesCapacity: a message growing in memory holds reservations
// for its whole buffer, and gives every byte back at the end.
func TestSpoolReservesCapacity(t *testing.T) {
	budget := NewMemoryBudget(1 << 20)
	s := newSpool(1<<20, t.TempDir(), budget)
	for i := 0; i < 40; i++ {
		s.Write(bytes.Repeat([]byte{'a' + byte(i%26)}, 1000))
		if s.f != nil {
			t.Fatal("spilled below both limits")
		}
		if got := budget.Used(); got != int64(cap(s.mem)) || got < s.Size() {
			t.Fatalf("after %d bytes: reserved %d, buffer capacity %d", s.Size(), got, cap(s.mem))
		}
	}
	got, _ := io.ReadAll(s.Section(0))
	if len(got) != 40000 || got[0] != 'a' || got[39999] != 'n' {
		t.Fatalf("content %d bytes", len(got))
	}
	s.Close()
	if budget.Used() != 0 {
		t.Fatalf("budget not returned: %d", budget.Used())
	}
}

// TestSpoolHeadFromFile: the header of a spilled message is read up to the
// blank line only, across read boundaries, and without one the first n
// bytes come back.
func TestSpoolHeadFromFile(t *testing.T) {
	for _, tc := range []struct {
		name, msg, want string
		n               int
	}{
		{"short", "A: 1\r\nB: 2\r\n\r\nbody\r\n", "A: 1\r\nB: 2\r\n\r\n", 1 << 20},
		{"no fields", "\r\nbody\r\n", "\r\n", 1 << 20},
		{"across chunks", strings.Repeat("X: "+strings.Repeat("x", 95)+"\r\n", 400) + "\r\nbody", strings.Repeat("X: "+strings.Repeat("x", 95)+"\r\n", 400) + "\r\n", 1 << 20},
		{"over n", strings.Repeat("Y: y\r\n", 100) + "\r\nbody", strings.Repeat("Y: y\r\n", 100)[:50], 50},
		{"no blank line", "A: 1\r\nB: 2\r\n", "A: 1\r\nB: 2\r\n", 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSpool(1, t.TempDir(), nil) // spills at once
			defer s.Close()
			s.Write([]byte(tc.msg))
			if s.f == nil {
				t.Fatal("not spilled")
			}
			head, err := s.Head(tc.n)
			if err != nil || string(head) != tc.want {
				t.Fatalf("head %q (%d bytes), %v; want %d bytes", head, len(head), err, len(tc.want))
			}
		})
	}
}

func TestCleanSpoolDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(dir+"/"+spoolPrefix+"left", []byte("x"), 0o600)
	os.WriteFile(dir+"/keep.txt", []byte("x"), 0o600)
	n, err := CleanSpoolDir(dir)
	if err != nil || n != 1 {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if _, err := os.Stat(dir + "/keep.txt"); err != nil {
		t.Fatal("removed a file that was not ours")
	}
}
