package main

import (
	"bufio"
	"io"
	"sync"
	"time"
)

// bufferedLog batches the decision log's lines into few writes: one write
// syscall per decision, under the log's lock, was 5 % of the gateway's CPU
// with every check on and a place where sessions queued behind each other.
// Lines reach the file within flushEvery, when 64 KiB have piled up, and at
// Close; a crash loses at most the last flushEvery of lines (never mail).
type bufferedLog struct {
	mu   sync.Mutex
	w    *bufio.Writer
	out  io.Writer
	err  error // the first write error, reported by every later Write
	stop chan struct{}
	done chan struct{}
}

const decisionLogFlush = 200 * time.Millisecond

func newBufferedLog(out io.Writer, flushEvery time.Duration) *bufferedLog {
	b := &bufferedLog{w: bufio.NewWriterSize(out, 64<<10), out: out, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(b.done)
		t := time.NewTicker(flushEvery)
		defer t.Stop()
		for {
			select {
			case <-b.stop:
				return
			case <-t.C:
				b.flush()
			}
		}
	}()
	return b
}

func (b *bufferedLog) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.w.Write(p)
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *bufferedLog) flush() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil && b.w.Buffered() > 0 {
		b.err = b.w.Flush()
	}
}

// Close stops the flusher and writes what is buffered; it does not close
// the underlying writer.
func (b *bufferedLog) Close() error {
	close(b.stop)
	<-b.done
	b.flush()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}
