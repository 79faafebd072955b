package relay_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/relay"
	"github.com/prometheus/client_golang/prometheus"
)

// metric reads one of r's metrics; label is the "reason" of discards.
func metric(t *testing.T, r *relay.Relay, name, reason string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(r.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := reason == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == "reason" && lp.GetValue() == reason {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func deliver(r *relay.Relay, domain string) error {
	return r.Deliver(context.Background(), domain, "a@example.org",
		[]string{"b@" + domain}, strings.NewReader(testMsg))
}

func mustDeliver(t *testing.T, r *relay.Relay, domain string) {
	t.Helper()
	if err := deliver(r, domain); err != nil {
		t.Fatalf("Deliver: %v", err)
	}
}

func wantConns(t *testing.T, d *testenv.Downstream, n int) {
	t.Helper()
	if got := d.Conns(); got != n {
		t.Errorf("downstream accepted %d connections, want %d", got, n)
	}
}

func singleRoute(d *testenv.Downstream, mode relay.TLSMode) map[string]relay.Route {
	return map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}, TLS: mode}}
}

func TestPoolReusesSession(t *testing.T) {
	for _, tc := range []struct {
		name string
		tls  bool
		mode relay.TLSMode
	}{
		{"plain", false, relay.TLSNone},
		{"opportunistic", true, relay.TLSOpportunistic},
		{"required", true, relay.TLSRequired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := testenv.StartDownstream(t, testenv.DownstreamOptions{TLS: tc.tls})
			r := newRelay(t, singleRoute(d, tc.mode), testOptions(t))
			mustDeliver(t, r, "corp.example")
			mustDeliver(t, r, "corp.example")
			// The front end's way: Open, transactions, Reset, Close.
			c, err := r.Open(context.Background(), "corp.example")
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 2; i++ {
				if err := transact(c, "a@example.org", []string{"b@corp.example"}, testMsg); err != nil {
					t.Fatal(err)
				}
				if err := c.Reset(); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			wantMails(t, c)
			msgs := d.WaitMessages(t, 4, 5*time.Second)
			for _, m := range msgs {
				if m.TLS != tc.tls || string(m.Data) != testMsg {
					t.Errorf("tls = %v, data = %q", m.TLS, m.Data)
				}
			}
			wantConns(t, d, 1)
			if h, m := metric(t, r, "mxguard_relay_pool_hits_total", ""), metric(t, r, "mxguard_relay_pool_misses_total", ""); h != 2 || m != 1 {
				t.Errorf("hits %v misses %v, want 2 and 1", h, m)
			}
			if n := metric(t, r, "mxguard_relay_pool_idle", ""); n != 1 {
				t.Errorf("idle = %v, want 1", n)
			}
		})
	}
}

// wantMails checks that a closed Conn refuses further use: its session may
// already serve someone else.
func wantMails(t *testing.T, c relay.Conn) {
	t.Helper()
	if err := c.Mail("a@example.org", nil); err == nil {
		t.Error("Mail on a closed Conn succeeded")
	}
}

func TestPoolDiscardsDeadSession(t *testing.T) {
	t.Run("downstream restarted", func(t *testing.T) {
		d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
		opts := testOptions(t)
		opts.PoolMaxIdle = 3
		r := newRelay(t, singleRoute(d, relay.TLSNone), opts)
		// Three idle sessions, all killed by the restart: one probe fails,
		// the two older ones are dropped without a probe each.
		var cs []relay.Conn
		for i := 0; i < 3; i++ {
			cs = append(cs, open(t, r, "corp.example"))
		}
		for _, c := range cs {
			c.Close()
		}
		d.Down()
		d.Up()
		mustDeliver(t, r, "corp.example")
		wantConns(t, d, 4)
		if n := metric(t, r, "mxguard_relay_pool_discards_total", "probe"); n != 3 {
			t.Errorf("probe discards = %v, want 3", n)
		}
		mustDeliver(t, r, "corp.example") // the fresh session was pooled
		wantConns(t, d, 4)
	})
	t.Run("downstream hangs", func(t *testing.T) {
		d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
		opts := testOptions(t) // CommandTimeout 2s: the probe waits 500ms
		r := newRelay(t, singleRoute(d, relay.TLSNone), opts)
		mustDeliver(t, r, "corp.example")
		// The NOOP's reply hangs; the hang is over by the time the probe
		// gives up and a fresh session is dialled.
		d.SetHang(time.Hour)
		timer := time.AfterFunc(200*time.Millisecond, func() { d.SetHang(0) })
		defer timer.Stop()
		start := time.Now()
		mustDeliver(t, r, "corp.example")
		if el := time.Since(start); el > 1500*time.Millisecond {
			t.Errorf("took %v", el)
		}
		wantConns(t, d, 2)
		if n := metric(t, r, "mxguard_relay_pool_discards_total", "probe"); n != 1 {
			t.Errorf("probe discards = %v, want 1", n)
		}
	})
}

func TestPoolFailsOverToPooledSession(t *testing.T) {
	first := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	second := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	r := newRelay(t, map[string]relay.Route{
		"corp.example": {Hosts: []string{first.Addr(), second.Addr()}, TLS: relay.TLSNone},
	}, testOptions(t))
	first.Down()
	mustDeliver(t, r, "corp.example") // fails over to second, pooled there
	first.Up()
	mustDeliver(t, r, "corp.example") // pooled session first
	wantConns(t, second, 1)
	wantConns(t, first, 0)
	if n := len(second.WaitMessages(t, 2, 5*time.Second)); n != 2 {
		t.Errorf("second got %d messages", n)
	}
}

func TestPoolMaxIdle(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	opts := testOptions(t)
	opts.PoolMaxIdle = 2
	r := newRelay(t, singleRoute(d, relay.TLSNone), opts)
	var cs []relay.Conn
	for i := 0; i < 3; i++ {
		cs = append(cs, open(t, r, "corp.example"))
	}
	for _, c := range cs {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if n := metric(t, r, "mxguard_relay_pool_idle", ""); n != 2 {
		t.Errorf("idle = %v, want 2", n)
	}
	if n := metric(t, r, "mxguard_relay_pool_discards_total", "full"); n != 1 {
		t.Errorf("full discards = %v, want 1", n)
	}
	for i := 0; i < 3; i++ {
		open(t, r, "corp.example") // two from the pool, one dialled
	}
	wantConns(t, d, 4)
}

func TestPoolMaxUses(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	opts := testOptions(t)
	opts.PoolMaxUses = 2
	r := newRelay(t, singleRoute(d, relay.TLSNone), opts)
	for i := 0; i < 5; i++ {
		mustDeliver(t, r, "corp.example")
	}
	wantConns(t, d, 3) // 2 + 2 + 1 transactions
	if n := metric(t, r, "mxguard_relay_pool_discards_total", "max_uses"); n != 2 {
		t.Errorf("max_uses discards = %v, want 2", n)
	}
}

func TestPoolIdleTimeout(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	opts := testOptions(t)
	opts.PoolIdleTimeout = 50 * time.Millisecond
	r := newRelay(t, singleRoute(d, relay.TLSNone), opts)
	mustDeliver(t, r, "corp.example")
	// The sweeper QUITs the session without any Open.
	deadline := time.Now().Add(5 * time.Second)
	for metric(t, r, "mxguard_relay_pool_discards_total", "idle_timeout") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("idle session not expired")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := metric(t, r, "mxguard_relay_pool_idle", ""); n != 0 {
		t.Errorf("idle = %v", n)
	}
	mustDeliver(t, r, "corp.example")
	wantConns(t, d, 2)
	// Reuse within the timeout still works.
	mustDeliver(t, r, "corp.example")
	wantConns(t, d, 2)
}

// TestPoolOnlyIdleSessions: a session with an open transaction or whose last
// command failed is never pooled; RSET makes it idle and poolable again.
func TestPoolOnlyIdleSessions(t *testing.T) {
	tests := []struct {
		name   string
		run    func(t *testing.T, d *testenv.Downstream, c relay.Conn)
		pooled bool
	}{
		{"unused", func(*testing.T, *testenv.Downstream, relay.Conn) {}, true},
		{"after mail", func(t *testing.T, _ *testenv.Downstream, c relay.Conn) {
			if err := c.Mail("a@example.org", nil); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"after rcpt", func(t *testing.T, _ *testenv.Downstream, c relay.Conn) {
			if err := c.Mail("a@example.org", nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt("b@corp.example", nil); err != nil {
				t.Fatal(err)
			}
		}, false},
		{"after rcpt and reset", func(t *testing.T, _ *testenv.Downstream, c relay.Conn) {
			if err := c.Mail("a@example.org", nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt("b@corp.example", nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Reset(); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"after data", func(t *testing.T, _ *testenv.Downstream, c relay.Conn) {
			if err := transact(c, "a@example.org", []string{"b@corp.example"}, testMsg); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"after refused data", func(t *testing.T, d *testenv.Downstream, c relay.Conn) {
			d.SetDataReply(554, [3]int{5, 6, 0}, "no")
			if err := transact(c, "a@example.org", []string{"b@corp.example"}, testMsg); err == nil {
				t.Fatal("data accepted")
			}
		}, false},
		{"after refused data and reset", func(t *testing.T, d *testenv.Downstream, c relay.Conn) {
			d.SetDataReply(554, [3]int{5, 6, 0}, "no")
			if err := transact(c, "a@example.org", []string{"b@corp.example"}, testMsg); err == nil {
				t.Fatal("data accepted")
			}
			if err := c.Reset(); err != nil {
				t.Fatal(err)
			}
		}, true},
		{"after refused rcpt", func(t *testing.T, d *testenv.Downstream, c relay.Conn) {
			d.RefuseRcpt("x@corp.example", 550, [3]int{5, 1, 1}, "no")
			if err := c.Mail("a@example.org", nil); err != nil {
				t.Fatal(err)
			}
			if err := c.Rcpt("x@corp.example", nil); err == nil {
				t.Fatal("rcpt accepted")
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
			r := newRelay(t, singleRoute(d, relay.TLSNone), testOptions(t))
			c, err := r.Open(context.Background(), "corp.example")
			if err != nil {
				t.Fatal(err)
			}
			tc.run(t, d, c)
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			d.SetDataReply(0, [3]int{}, "")
			if got := metric(t, r, "mxguard_relay_pool_idle", "") == 1; got != tc.pooled {
				t.Fatalf("pooled = %v, want %v", got, tc.pooled)
			}
			// Whatever was pooled has no transaction open: a fresh MAIL
			// (a nested one would get 503) and a delivery go through.
			mustDeliver(t, r, "corp.example")
			want := 2
			if tc.pooled {
				want = 1
			}
			wantConns(t, d, want)
		})
	}
}

// TestPoolTLSModes: sessions serve only routes of the same TLS mode, so a
// plaintext session never serves a required route.
func TestPoolTLSModes(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{TLS: true})
	r := newRelay(t, map[string]relay.Route{
		"plain.example":  {Hosts: []string{d.Addr()}, TLS: relay.TLSNone},
		"secure.example": {Hosts: []string{d.Addr()}, TLS: relay.TLSRequired},
	}, testOptions(t))
	mustDeliver(t, r, "plain.example")
	mustDeliver(t, r, "secure.example")
	mustDeliver(t, r, "plain.example")
	mustDeliver(t, r, "secure.example")
	wantConns(t, d, 2)
	for _, m := range d.WaitMessages(t, 4, 5*time.Second) {
		if want := strings.HasSuffix(m.To[0], "@secure.example"); m.TLS != want {
			t.Errorf("message to %s: tls = %v", m.To[0], m.TLS)
		}
	}

	// A downstream without STARTTLS: the pooled plaintext session of the
	// "none" route must not rescue the "required" one.
	plain := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	r = newRelay(t, map[string]relay.Route{
		"plain.example":  {Hosts: []string{plain.Addr()}, TLS: relay.TLSNone},
		"secure.example": {Hosts: []string{plain.Addr()}, TLS: relay.TLSRequired},
	}, testOptions(t))
	mustDeliver(t, r, "plain.example")
	wantFailure(t, deliver(r, "secure.example"))
	if n := plain.Mails(); n != 1 {
		t.Errorf("downstream saw %d MAIL, want 1", n)
	}
	wantConns(t, plain, 2)
}

// TestPoolOpportunisticFallbackPooled: the plaintext session left after a
// failed handshake is pooled for the opportunistic route and reused.
func TestPoolOpportunisticFallbackPooled(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{TLS: true})
	opts := testOptions(t)
	opts.RootCAs = nil // the handshake fails verification
	r := newRelay(t, singleRoute(d, relay.TLSOpportunistic), opts)
	mustDeliver(t, r, "corp.example")
	mustDeliver(t, r, "corp.example")
	wantConns(t, d, 2) // the failed handshake and one plaintext session
}

func TestPoolOff(t *testing.T) {
	for _, opt := range []func(*relay.Options){
		func(o *relay.Options) { o.PoolMaxIdle = -1 },
		func(o *relay.Options) { o.PoolIdleTimeout = -1 },
		func(o *relay.Options) { o.PoolMaxUses = -1 },
	} {
		d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
		opts := testOptions(t)
		opt(&opts)
		r := newRelay(t, singleRoute(d, relay.TLSNone), opts)
		mustDeliver(t, r, "corp.example")
		mustDeliver(t, r, "corp.example")
		wantConns(t, d, 2)
	}
}

func TestRelayClose(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	r := newRelay(t, singleRoute(d, relay.TLSNone), testOptions(t))
	c1, c2 := open(t, r, "corp.example"), open(t, r, "corp.example")
	c1.Close()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if n := metric(t, r, "mxguard_relay_pool_idle", ""); n != 0 {
		t.Errorf("idle after Close = %v", n)
	}
	c2.Close() // QUIT: the pool is closed
	if n := metric(t, r, "mxguard_relay_pool_discards_total", "closed"); n != 2 {
		t.Errorf("closed discards = %v, want 2", n)
	}
	// Still usable, without pooling.
	mustDeliver(t, r, "corp.example")
	mustDeliver(t, r, "corp.example")
	wantConns(t, d, 4)
}

// TestDeliverCancelledNotPooled: a Deliver whose context ends mid-way
// leaves nothing half-done in the pool.
func TestDeliverCancelledNotPooled(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	r := newRelay(t, singleRoute(d, relay.TLSNone), testOptions(t))
	ctx, cancel := context.WithCancel(context.Background())
	err := r.Deliver(ctx, "corp.example", "a@example.org", []string{"b@corp.example"},
		readerFunc(func(p []byte) (int, error) { cancel(); time.Sleep(20 * time.Millisecond); return 0, fmt.Errorf("stop") }))
	wantFailure(t, err)
	if n := metric(t, r, "mxguard_relay_pool_idle", ""); n != 0 {
		t.Errorf("idle = %v", n)
	}
	mustDeliver(t, r, "corp.example")
	wantConns(t, d, 2)
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func TestPoolConcurrent(t *testing.T) {
	d := testenv.StartDownstream(t, testenv.DownstreamOptions{Discard: true})
	opts := testOptions(t)
	opts.PoolMaxIdle = 4
	opts.PoolMaxUses = 7
	r := newRelay(t, singleRoute(d, relay.TLSNone), opts)
	const workers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if i%2 == 0 {
					if err := deliver(r, "corp.example"); err != nil {
						errs <- err
					}
					continue
				}
				// The front end's way, with a reset between transactions.
				c, err := r.Open(context.Background(), "corp.example")
				if err != nil {
					errs <- err
					continue
				}
				if err := transact(c, "a@example.org", []string{"b@corp.example"}, testMsg); err != nil {
					errs <- err
				}
				if err := c.Reset(); err != nil {
					errs <- err
				}
				c.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := d.Delivered(); got != workers*each {
		t.Errorf("delivered %d, want %d", got, workers*each)
	}
	hits := metric(t, r, "mxguard_relay_pool_hits_total", "")
	misses := metric(t, r, "mxguard_relay_pool_misses_total", "")
	if hits+misses != workers*each || float64(d.Conns()) != misses {
		t.Errorf("hits %v + misses %v != %d, or conns %d != misses", hits, misses, workers*each, d.Conns())
	}
	t.Logf("%d deliveries over %d connections", workers*each, d.Conns())
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}
