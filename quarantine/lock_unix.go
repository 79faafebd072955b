//go:build unix

package quarantine

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// lockName is the store-wide lock file. It is never removed: removing a
// flock(2)ed file would let a waiter lock an unlinked inode.
const lockName = ".lock"

// lock takes the store's exclusive flock(2). flock locks belong to the open
// file description, so two goroutines of one process exclude each other just
// like two processes do, and the kernel drops the lock if the holder dies:
// a crash never leaves the store locked. The wait is bounded by ctx.
func (s *Dir) lock(ctx context.Context) (unlock func(), err error) {
	f, err := s.root.OpenFile(lockName, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("quarantine lock: %w", err)
	}
	delay := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("quarantine lock: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("quarantine lock: %w", ctx.Err())
		case <-time.After(delay):
		}
		if delay < 20*time.Millisecond {
			delay *= 2
		}
	}
}
