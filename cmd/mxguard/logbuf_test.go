package main

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

type countingBuf struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
}

func (s *countingBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.writes++
	return s.b.Write(p)
}

func (s *countingBuf) snapshot() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String(), s.writes
}

// TestBufferedLog: lines written together reach the file in one write,
// within the flush interval, and Close writes the rest.
func TestBufferedLog(t *testing.T) {
	out := &countingBuf{}
	b := newBufferedLog(out, 20*time.Millisecond)
	for i := 0; i < 100; i++ {
		b.Write([]byte("line\n"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, writes := out.snapshot()
		if got == strings.Repeat("line\n", 100) {
			if writes > 2 {
				t.Errorf("%d writes for 100 lines", writes)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not flushed: %q", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.Write([]byte("last\n"))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if got, _ := out.snapshot(); !strings.HasSuffix(got, "line\nlast\n") {
		t.Errorf("Close did not flush: %q", got[len(got)-20:])
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// TestBufferedLogError: a failed write is reported by the writes after it
// and by Close.
func TestBufferedLogError(t *testing.T) {
	b := newBufferedLog(failWriter{}, time.Millisecond)
	b.Write([]byte("x\n"))
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := b.Write([]byte("y\n")); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("write error never reported")
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := b.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("Close: %v", err)
	}
}
