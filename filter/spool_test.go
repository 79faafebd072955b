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
	budget := NewMemoryBudget(1000)
	a := newSpool(1<<20, dir, budget)
	a.Write(bytes.Repeat([]byte("a"), 800))
	if a.f != nil || budget.Used() != 800 {
		t.Fatalf("first spool: file=%v used=%d", a.f != nil, budget.Used())
	}
	b := newSpool(1<<20, dir, budget)
	b.Write(bytes.Repeat([]byte("b"), 300))
	if b.f == nil {
		t.Fatal("second spool stayed in memory past the budget")
	}
	if budget.Used() != 800 {
		t.Fatalf("used %d", budget.Used())
	}
	got, _ := io.ReadAll(b.Section(0))
	if string(got) != strings.Repeat("b", 300) {
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
