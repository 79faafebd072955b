package filter_test

import (
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/filter"
)

// TestLargeMessagesStayWithinMemoryBudget: many large messages at once keep
// the spooled bytes in memory under the configured budget (the rest goes to
// temporary files), all are delivered, and no temporary file is left.
func TestLargeMessagesStayWithinMemoryBudget(t *testing.T) {
	const budget = 4 << 20
	b := filter.NewMemoryBudget(budget)
	spoolDir := t.TempDir()
	g := startGW(t, func(o *filter.Options, s *gwSetup) {
		o.MemoryBudget = b
		o.SpoolMemory = 1 << 20
		o.SpoolDir = spoolDir
		o.MaxMessageBytes = 8 << 20
		s.downOpts.Discard = true
	})
	var peak atomic.Int64
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if u := b.Used(); u > peak.Load() {
				peak.Store(u)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()
	body := strings.Repeat(strings.Repeat("z", 998)+"\r\n", 2<<10) // 2 MiB
	var wg sync.WaitGroup
	var delivered atomic.Int32
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if code, _ := g.sendMail("alice@example.org", []string{"bob@corp.test"}, msg("alice@example.org", "bob@corp.test", "big", body)); code == 250 {
				delivered.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	if delivered.Load() != 16 {
		t.Fatalf("%d of 16 delivered", delivered.Load())
	}
	if p := peak.Load(); p > budget {
		t.Fatalf("peak spooled bytes in memory %d > budget %d", p, budget)
	}
	if b.Used() != 0 {
		t.Errorf("budget not returned: %d", b.Used())
	}
	left, _ := os.ReadDir(spoolDir)
	if len(left) != 0 {
		t.Errorf("%d spool files left", len(left))
	}
	t.Logf("16 × 2 MiB concurrently, peak in memory %d KiB of a %d KiB budget", peak.Load()>>10, budget>>10)
}
