package quarantine

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

func openTestDir(t testing.TB, c *clock) (*Dir, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "q")
	s, err := OpenDir(dir, DirOptions{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, dir
}

func TestDirFileModes(t *testing.T) {
	s, dir := openTestDir(t, newClock())
	id, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 100)))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("store dir mode %v, %v", fi.Mode(), err)
	}
	for _, name := range []string{id + ".msg", id + ".json"} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil || fi.Mode() != 0o600 {
			t.Fatalf("%s: mode %v, %v", name, fi.Mode(), err)
		}
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Fatalf("temporary file left after Put: %s", e.Name())
		}
	}
}

// A crash between writing the message and writing its metadata, or in the
// middle of either, leaves files no reader may see; Purge removes them once
// they are old enough not to belong to a Put in progress.
func TestDirCrashLeftovers(t *testing.T) {
	c := newClock()
	s, dir := openTestDir(t, c)
	kept, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 100)))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var crashed []string
	for i, files := range [][]string{
		{".msg.tmp"},                // died while writing the message
		{".msg"},                    // died after the message, before the metadata
		{".msg", ".json.tmp"},       // died while writing the metadata
		{".msg.tmp", ".json.tmp"},   // nonsense combination, still ignored
		{".json.tmp"},               // metadata temp alone
		{".msg", ".msg.tmp", ".ex"}, // .ex is not ours: never touched
	} {
		id, _ := newID(c.Now().Add(time.Duration(i) * time.Millisecond))
		for _, ext := range files {
			write(id+ext, `{"id":"`+id+`","status":"held"}`)
		}
		crashed = append(crashed, id)
	}
	items, _, err := s.List(ctx, Filter{})
	if err != nil || len(items) != 1 || items[0].ID != kept {
		t.Fatalf("List sees leftovers: %v %v", ids(items), err)
	}
	for _, id := range crashed {
		if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(leftover %s) = %v", id, err)
		}
		if _, err := s.Open(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open(leftover %s) = %v", id, err)
		}
	}
	// Young leftovers may be a Put in progress: kept.
	if n, err := s.Purge(ctx, c.Now().Add(-30*24*time.Hour)); n != 0 || err != nil {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	if left := countFiles(t, dir); left < 10 {
		t.Fatalf("young leftovers purged: %d files left", left)
	}
	c.Advance(2 * time.Hour)
	if n, err := s.Purge(ctx, c.Now().Add(-30*24*time.Hour)); n != 0 || err != nil {
		t.Fatalf("Purge = %d, %v (leftovers are not items)", n, err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	want := []string{".lock", crashed[5] + ".ex", kept + ".json", kept + ".msg"}
	sort.Strings(want)
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("after purge:\n got %v\nwant %v", names, want)
	}
}

func countFiles(t *testing.T, dir string) int {
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// Files planted in the store (symlinks, FIFOs) are refused even when the
// name is a valid id; os.Root keeps everything else inside.
func TestDirRefusesSymlinks(t *testing.T) {
	c := newClock()
	s, dir := openTestDir(t, c)
	outside := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(outside, []byte(`{"id":"x"}`), 0o600)

	id1, _ := newID(c.Now())
	os.Symlink(outside, filepath.Join(dir, id1+".json"))
	if _, err := s.Get(ctx, id1); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Get(symlinked meta) = %v", err)
	}

	id2, err := s.Put(ctx, sampleMeta(2), bytes.NewReader(sampleMsg(2, 10)))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, id2+".msg"))
	os.Symlink(outside, filepath.Join(dir, id2+".msg"))
	if _, err := s.Open(ctx, id2); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Open(symlinked message) = %v", err)
	}
	d := &countingDeliverer{}
	if err := Release(ctx, s, id2, "rev", d); err == nil || d.n.Load() != 0 {
		t.Fatalf("Release(symlinked message) = %v, deliveries %d", err, d.n.Load())
	}

	id3, _ := newID(c.Now().Add(time.Second))
	syscall.Mkfifo(filepath.Join(dir, id3+".json"), 0o600)
	if _, err := s.Get(ctx, id3); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Get(fifo meta) = %v", err)
	}
	items, _, err := s.List(ctx, Filter{})
	if err != nil {
		t.Fatal(err)
	}
	damaged := 0
	for _, m := range items {
		if m.Status == StatusDamaged {
			damaged++
		}
	}
	if damaged != 2 {
		t.Fatalf("List: %d damaged items, want 2 (symlink, fifo): %+v", damaged, items)
	}
}

// The store directory given as a symlink is fine (administrators do that);
// what is refused is a path escaping it.
func TestDirUnreachable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := OpenDir(filepath.Join(f, "q"), DirOptions{}); err == nil {
		t.Fatal("OpenDir under a regular file succeeded")
	}
	if _, err := OpenDir("", DirOptions{}); err == nil {
		t.Fatal("OpenDir(\"\") succeeded")
	}
}

// TestDirSIGKILL stores a stream of messages in a child process, kills it
// with SIGKILL mid-stream, and checks that every id the child acknowledged
// (printed after Put returned, as the gateway would answer 250) is complete
// in the store and that no partial item is visible.
func TestDirSIGKILL(t *testing.T) {
	if os.Getenv("MXG_QUARANTINE_CHILD") != "" {
		return
	}
	dir := filepath.Join(t.TempDir(), "q")
	cmd := exec.Command(os.Args[0], "-test.run=^TestDirSIGKILLChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "MXG_QUARANTINE_CHILD="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	sc := bufio.NewScanner(out)
	deadline := time.Now().Add(20 * time.Second)
	for sc.Scan() && time.Now().Before(deadline) {
		line := sc.Text()
		if id, ok := strings.CutPrefix(line, "ACK "); ok {
			acked = append(acked, id)
			if len(acked) == 40 {
				cmd.Process.Signal(syscall.SIGKILL)
				break
			}
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
	if len(acked) < 40 {
		t.Fatalf("child acknowledged only %d messages", len(acked))
	}
	s, err := OpenDir(dir, DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, id := range acked {
		m, err := s.Get(ctx, id)
		if err != nil {
			t.Fatalf("acknowledged %s: %v", id, err)
		}
		if body := readAll(t, s, id); int64(len(body)) != m.Size {
			t.Fatalf("acknowledged %s: %d bytes, meta says %d", id, len(body), m.Size)
		}
	}
	items, _, err := s.List(ctx, Filter{Limit: MaxLimit})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range items {
		if m.Status != StatusHeld {
			t.Fatalf("listed item %s is %s: %s", m.ID, m.Status, m.Damaged)
		}
		if _, err := s.Open(ctx, m.ID); err != nil {
			t.Fatalf("listed item without message: %v", err)
		}
	}
	if len(items) < len(acked) {
		t.Fatalf("%d listed, %d acknowledged", len(items), len(acked))
	}
}

// TestDirSIGKILLChild is the child of TestDirSIGKILL; it does nothing when
// run on its own.
func TestDirSIGKILLChild(t *testing.T) {
	dir := os.Getenv("MXG_QUARANTINE_CHILD")
	if dir == "" {
		return
	}
	s, err := OpenDir(dir, DirOptions{})
	if err != nil {
		fmt.Println("ERR", err)
		os.Exit(1)
	}
	for i := 0; i < 10_000; i++ {
		id, err := s.Put(ctx, sampleMeta(i), bytes.NewReader(sampleMsg(i, 20_000)))
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("ACK", id)
	}
	os.Exit(0)
}
