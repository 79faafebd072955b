package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxguard/mxguard/internal/testenv"
)

var zoneFile = filepath.Join("..", "testdata", "zones", "example.org.zone")

// fakeClock is an injectable clock so cache expiry is tested without sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// setup starts a DNS server with the example zone and a resolver on it.
func setup(t testing.TB, mod func(*Config)) (*testenv.DNS, *Resolver, *fakeClock) {
	t.Helper()
	d := testenv.StartDNS(t)
	d.LoadZoneFile(t, zoneFile, "example.org.")
	clk := &fakeClock{t: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	cfg := Config{Servers: []string{d.Addr()}, Timeout: time.Second, Now: clk.Now}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d, r, clk
}

func TestLookups(t *testing.T) {
	d, r, _ := setup(t, nil)
	d.AddRR(t,
		`raw.test. 60 IN TXT "a\"b\\c\255\000 caf\195\169"`,
		`loop1.test. 60 IN CNAME loop2.test.`,
		`loop2.test. 60 IN CNAME loop1.test.`,
		`nullmx.test. 60 IN MX 0 .`,
	)
	rev6, _ := dns.ReverseAddr("2001:db8::2")
	d.AddRR(t, rev6+` 60 IN PTR v6.example.org.`)
	ctx := context.Background()
	str := func(v any, err error) string {
		if err != nil {
			var de *net.DNSError
			if !errors.As(err, &de) {
				return "non-DNSError " + err.Error()
			}
			return "error: " + de.Err
		}
		switch v := v.(type) {
		case []string:
			return strings.Join(v, " | ")
		case []netip.Addr:
			var s []string
			for _, a := range v {
				s = append(s, a.String())
			}
			return strings.Join(s, " ")
		case []*net.MX:
			var s []string
			for _, mx := range v {
				s = append(s, fmt.Sprintf("%d %s", mx.Pref, mx.Host))
			}
			return strings.Join(s, ", ")
		}
		return fmt.Sprint(v)
	}
	tests := []struct {
		name string
		do   func() (any, error)
		want string
	}{
		{"txt", func() (any, error) { return r.LookupTXT(ctx, "example.org") }, "v=spf1 ip4:192.0.2.0/24 -all"},
		{"txt multi-string joined", func() (any, error) { return r.LookupTXT(ctx, "multi.example.org") },
			"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQ"},
		{"txt two records", func() (any, error) { return r.LookupTXT(ctx, "twotxt.example.org.") }, "first | second"},
		{"txt raw bytes", func() (any, error) { return r.LookupTXT(ctx, "raw.test") }, "a\"b\\c\xff\x00 caf\u00e9"},
		{"txt wildcard", func() (any, error) { return r.LookupTXT(ctx, "x.y.wild.example.org") }, "wildcard"},
		{"txt case-insensitive", func() (any, error) { return r.LookupTXT(ctx, "SEL._DomainKey.Example.ORG") },
			"v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="},
		{"ip4", func() (any, error) { return r.LookupNetIP(ctx, "ip4", "mx1.example.org") }, "192.0.2.25"},
		{"ip6", func() (any, error) { return r.LookupNetIP(ctx, "ip6", "mx1.example.org") }, "2001:db8::25"},
		{"ip both", func() (any, error) { return r.LookupNetIP(ctx, "ip", "mx1.example.org") }, "192.0.2.25 2001:db8::25"},
		{"ip v4 only", func() (any, error) { return r.LookupNetIP(ctx, "ip", "mx2.example.org") }, "192.0.2.26"},
		{"ip literal", func() (any, error) { return r.LookupNetIP(ctx, "ip", "192.0.2.9") }, "192.0.2.9"},
		{"ip cname chain", func() (any, error) { return r.LookupNetIP(ctx, "ip4", "alias.example.org") }, "192.0.2.1"},
		{"ip dangling cname", func() (any, error) { return r.LookupNetIP(ctx, "ip4", "dangling.example.org") }, "error: " + errTextNXDomain},
		{"cname loop", func() (any, error) { return r.LookupTXT(ctx, "loop1.test") }, "error: " + errTextChain},
		{"bad network", func() (any, error) { return r.LookupNetIP(ctx, "tcp", "example.org") }, "error: " + errTextNetwork},
		{"mx sorted", func() (any, error) { return r.LookupMX(ctx, "example.org") }, "10 mx1.example.org., 20 mx2.example.org."},
		{"null mx", func() (any, error) { return r.LookupMX(ctx, "nullmx.test") }, "0 ."},
		{"ptr v4", func() (any, error) { return r.LookupAddr(ctx, "192.0.2.25") }, "mx1.example.org."},
		{"ptr v6", func() (any, error) { return r.LookupAddr(ctx, "2001:db8::2") }, "v6.example.org."},
		{"ptr bad addr", func() (any, error) { return r.LookupAddr(ctx, "not-an-ip") }, "error: " + errTextBadAddr},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := str(tc.do()); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestErrorClassification checks the contract the auth code relies on: every
// error is an unwrapped *net.DNSError with the right flags.
func TestErrorClassification(t *testing.T) {
	d, r, _ := setup(t, func(c *Config) { c.Timeout = 150 * time.Millisecond; c.Attempts = 1 })
	d.AddRR(t, `sf.test. 60 IN TXT "x"`, `ref.test. 60 IN TXT "x"`, `ni.test. 60 IN TXT "x"`)
	d.SetRcode("sf.test", dns.TypeANY, dns.RcodeServerFailure)
	d.SetRcode("ref.test", dns.TypeTXT, dns.RcodeRefused)
	d.SetRcode("ni.test", dns.TypeTXT, dns.RcodeNotImplemented)
	d.SetTimeout("slow.test", dns.TypeANY)

	// A server address where nothing listens: ICMP port unreachable.
	deadPort := testenv.FreePort(t)
	dead, err := New(Config{Servers: []string{fmt.Sprintf("127.0.0.1:%d", deadPort)}, Timeout: 500 * time.Millisecond, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}

	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()

	long := strings.Repeat("a.", 126) + "ab" // 254 octets
	tests := []struct {
		name                       string
		do                         func() error
		notFound, temporary, timeo bool
		nx, nodata                 bool
	}{
		{"nxdomain", func() error { _, err := r.LookupTXT(context.Background(), "nope.example.org"); return err }, true, false, false, true, false},
		{"nodata", func() error { _, err := r.LookupTXT(context.Background(), "mx1.example.org"); return err }, true, false, false, false, true},
		{"nodata ent", func() error { _, err := r.LookupTXT(context.Background(), "_domainkey.example.org"); return err }, true, false, false, false, true},
		{"nodata ip", func() error { _, err := r.LookupNetIP(context.Background(), "ip", "_dmarc.example.org"); return err }, true, false, false, false, true},
		{"nxdomain mx", func() error { _, err := r.LookupMX(context.Background(), "nope.test"); return err }, true, false, false, true, false},
		{"nxdomain ptr", func() error { _, err := r.LookupAddr(context.Background(), "198.51.100.1"); return err }, true, false, false, true, false},
		{"servfail", func() error { _, err := r.LookupTXT(context.Background(), "sf.test"); return err }, false, true, false, false, false},
		{"servfail ip both", func() error { _, err := r.LookupNetIP(context.Background(), "ip", "sf.test"); return err }, false, true, false, false, false},
		{"refused", func() error { _, err := r.LookupTXT(context.Background(), "ref.test"); return err }, false, true, false, false, false},
		{"notimp", func() error { _, err := r.LookupTXT(context.Background(), "ni.test"); return err }, false, true, false, false, false},
		{"timeout", func() error { _, err := r.LookupTXT(context.Background(), "slow.test"); return err }, false, true, true, false, false},
		{"ctx deadline", func() error { _, err := r.LookupTXT(expired, "example.org"); return err }, false, true, true, false, false},
		{"ctx deadline mid-flight", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
			defer cancel()
			_, err := r.LookupTXT(ctx, "slow.test")
			return err
		}, false, true, true, false, false},
		{"ctx canceled", func() error { _, err := r.LookupTXT(canceled, "example.org"); return err }, false, true, false, false, false},
		{"network", func() error { _, err := dead.LookupTXT(context.Background(), "example.org"); return err }, false, true, false, false, false},
		{"name too long", func() error { _, err := r.LookupTXT(context.Background(), long); return err }, false, false, false, false, false},
		{"label too long", func() error { _, err := r.LookupTXT(context.Background(), strings.Repeat("a", 64)+".test"); return err }, false, false, false, false, false},
		{"empty label", func() error { _, err := r.LookupMX(context.Background(), "a..test"); return err }, false, false, false, false, false},
		{"empty name", func() error { _, err := r.LookupNetIP(context.Background(), "ip4", ""); return err }, false, false, false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil {
				t.Fatal("no error")
			}
			// Direct type assertion, as go-msgauth does: no wrapping.
			de, ok := err.(*net.DNSError)
			if !ok {
				t.Fatalf("error %T is not *net.DNSError: %v", err, err)
			}
			var de2 *net.DNSError
			if !errors.As(err, &de2) || de2 != de {
				t.Fatalf("errors.As failed")
			}
			ne, ok := err.(net.Error)
			if !ok {
				t.Fatalf("not a net.Error")
			}
			if de.IsNotFound != tc.notFound || de.IsTemporary != tc.temporary || de.IsTimeout != tc.timeo {
				t.Errorf("%v: notFound=%v temporary=%v timeout=%v, want %v %v %v",
					err, de.IsNotFound, de.IsTemporary, de.IsTimeout, tc.notFound, tc.temporary, tc.timeo)
			}
			//lint:ignore SA1019 go-msgauth still calls Temporary()
			if ne.Temporary() != tc.temporary || ne.Timeout() != tc.timeo {
				t.Errorf("net.Error Temporary()=%v Timeout()=%v", ne.Temporary(), ne.Timeout()) //nolint:staticcheck
			}
			if IsNXDomain(err) != tc.nx || IsNoData(err) != tc.nodata {
				t.Errorf("IsNXDomain=%v IsNoData=%v, want %v %v", IsNXDomain(err), IsNoData(err), tc.nx, tc.nodata)
			}
			if de.Name == "" && tc.name != "empty name" {
				t.Errorf("error has no Name")
			}
		})
	}
	if got := r.Stats(); got.Upstream == 0 || got.Timeouts < 2 || got.NXDomain < 2 || got.NoData < 2 {
		t.Errorf("stats %+v", got)
	}
}

func TestInvalidNameSendsNothing(t *testing.T) {
	d, r, _ := setup(t, nil)
	for _, name := range []string{strings.Repeat("a", 64) + ".test", strings.Repeat("abcdefgh.", 29) + "test", "..", ".a"} {
		if _, err := r.LookupTXT(context.Background(), name); err == nil {
			t.Errorf("%q: no error", name)
		}
	}
	// 253 octets and 63-octet labels are fine (NXDOMAIN here).
	ok := strings.Repeat(strings.Repeat("b", 63)+".", 3) + strings.Repeat("c", 61)
	if _, err := r.LookupTXT(context.Background(), ok+"."); !IsNXDomain(err) {
		t.Errorf("253-octet name: %v", err)
	}
	if d.Queries() != 1 {
		t.Errorf("server saw %d queries, want 1", d.Queries())
	}
}

func TestCacheHit(t *testing.T) {
	d, r, _ := setup(t, nil)
	ctx := context.Background()
	for i, name := range []string{"example.org", "EXAMPLE.org.", "example.ORG"} {
		txt, err := r.LookupTXT(ctx, name)
		if err != nil || len(txt) != 1 {
			t.Fatalf("%d: %v %v", i, txt, err)
		}
		txt[0] = "mutated by caller" // must not reach the cache
	}
	if d.Queries() != 1 {
		t.Errorf("server saw %d queries, want 1", d.Queries())
	}
	if txt, _ := r.LookupTXT(ctx, "example.org"); txt[0] != "v=spf1 ip4:192.0.2.0/24 -all" {
		t.Errorf("cache was mutated: %q", txt)
	}
	mx, _ := r.LookupMX(ctx, "example.org")
	mx[0].Host = "evil."
	mx, _ = r.LookupMX(ctx, "example.org")
	if mx[0].Host != "mx1.example.org." {
		t.Errorf("cache was mutated: %v", mx[0])
	}
	st := r.Stats()
	if st.CacheHits != 4 || st.CacheMisses != 2 || st.Queries != 6 {
		t.Errorf("stats %+v", st)
	}
}

func TestCacheOff(t *testing.T) {
	d, r, _ := setup(t, func(c *Config) { c.CacheSize = -1 })
	for i := 0; i < 3; i++ {
		if _, err := r.LookupTXT(context.Background(), "example.org"); err != nil {
			t.Fatal(err)
		}
	}
	if d.Queries() != 3 {
		t.Errorf("server saw %d queries, want 3", d.Queries())
	}
}

func TestCacheBounded(t *testing.T) {
	d, r, _ := setup(t, func(c *Config) { c.CacheSize = 2 })
	ctx := context.Background()
	for _, n := range []string{"example.org", "twotxt.example.org", "multi.example.org", "example.org"} {
		if _, err := r.LookupTXT(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	// example.org was evicted by the third name, so it was asked twice.
	if d.Queries() != 4 {
		t.Errorf("server saw %d queries, want 4", d.Queries())
	}
}

func TestTTLExpiry(t *testing.T) {
	d, r, clk := setup(t, func(c *Config) { c.MaxTTL = 10 * time.Minute })
	d.AddRR(t, `short.test. 30 IN A 192.0.2.30`, `long.test. 86400 IN A 192.0.2.31`)
	ctx := context.Background()
	look := func(name string) {
		t.Helper()
		if _, err := r.LookupNetIP(ctx, "ip4", name); err != nil {
			t.Fatal(err)
		}
	}
	look("short.test")
	look("long.test")
	clk.Advance(29 * time.Second)
	look("short.test")
	if d.Queries() != 2 {
		t.Fatalf("before expiry: %d queries, want 2", d.Queries())
	}
	clk.Advance(2 * time.Second)
	look("short.test")
	if d.Queries() != 3 {
		t.Fatalf("after TTL: %d queries, want 3", d.Queries())
	}
	clk.Advance(9 * time.Minute)
	look("long.test") // 9m31s < MaxTTL
	if d.Queries() != 3 {
		t.Fatalf("before MaxTTL: %d queries, want 3", d.Queries())
	}
	clk.Advance(time.Minute)
	look("long.test") // capped at 10m
	if d.Queries() != 4 {
		t.Fatalf("after MaxTTL: %d queries, want 4", d.Queries())
	}
}

func TestTTLZeroNotCached(t *testing.T) {
	d, r, _ := setup(t, nil)
	d.AddRR(t, `zero.test. 0 IN TXT "z"`)
	for i := 0; i < 2; i++ {
		if _, err := r.LookupTXT(context.Background(), "zero.test"); err != nil {
			t.Fatal(err)
		}
	}
	if d.Queries() != 2 {
		t.Errorf("server saw %d queries, want 2", d.Queries())
	}
}

func TestNegativeCache(t *testing.T) {
	// The zone's SOA has TTL 300 and MINIMUM 120: negative TTL 120s.
	d, r, clk := setup(t, nil)
	ctx := context.Background()
	asks := func(name string, qtype uint16) {
		t.Helper()
		var err error
		if qtype == dns.TypeTXT {
			_, err = r.LookupTXT(ctx, name)
		} else {
			_, err = r.LookupMX(ctx, name)
		}
		if err == nil {
			t.Fatalf("%s: expected a negative answer", name)
		}
	}
	asks("nope.example.org", dns.TypeTXT) // NXDOMAIN
	asks("mx1.example.org", dns.TypeMX)   // NODATA
	clk.Advance(119 * time.Second)
	asks("nope.example.org", dns.TypeTXT)
	asks("mx1.example.org", dns.TypeMX)
	if d.Queries() != 2 {
		t.Fatalf("within negative TTL: %d queries, want 2", d.Queries())
	}
	clk.Advance(2 * time.Second)
	asks("nope.example.org", dns.TypeTXT)
	asks("mx1.example.org", dns.TypeMX)
	if d.Queries() != 4 {
		t.Fatalf("after negative TTL: %d queries, want 4", d.Queries())
	}

	// NegativeTTL caps it.
	d2, r2, clk2 := setup(t, func(c *Config) { c.NegativeTTL = 30 * time.Second })
	for i := 0; i < 2; i++ {
		if _, err := r2.LookupTXT(ctx, "nope.example.org"); !IsNXDomain(err) {
			t.Fatal(err)
		}
		clk2.Advance(31 * time.Second)
	}
	if d2.Queries() != 2 {
		t.Errorf("NegativeTTL cap: %d queries, want 2", d2.Queries())
	}
}

func TestFailuresNotCached(t *testing.T) {
	d, r, _ := setup(t, func(c *Config) { c.Attempts = 1; c.Timeout = 100 * time.Millisecond })
	d.SetRcode("example.org", dns.TypeTXT, dns.RcodeServerFailure)
	d.SetTimeout("mx1.example.org", dns.TypeA)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := r.LookupTXT(ctx, "example.org"); err == nil {
			t.Fatal("expected SERVFAIL")
		}
		if _, err := r.LookupNetIP(ctx, "ip4", "mx1.example.org"); err == nil {
			t.Fatal("expected timeout")
		}
	}
	if d.Queries() != 4 {
		t.Errorf("server saw %d queries, want 4", d.Queries())
	}
	// Once the server recovers, the answer comes through.
	d.Reset()
	d.LoadZoneFile(t, zoneFile, "example.org.")
	if _, err := r.LookupTXT(ctx, "example.org"); err != nil {
		t.Errorf("after recovery: %v", err)
	}
}

func TestRetryAcrossServers(t *testing.T) {
	d := testenv.StartDNS(t)
	d.LoadZoneFile(t, zoneFile, "example.org.")
	dead := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	r, err := New(Config{Servers: []string{dead, d.Addr()}, Timeout: 500 * time.Millisecond, Attempts: 2, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if _, err := r.LookupTXT(context.Background(), "example.org"); err != nil {
			t.Fatalf("lookup %d: %v", i, err)
		}
	}
	if st := r.Stats(); st.UpstreamErrors == 0 || st.UpstreamErrors > 4 {
		t.Errorf("round-robin should hit the dead server sometimes: %+v", st)
	}
}

func TestTruncationRetriesOverTCP(t *testing.T) {
	d, r, _ := setup(t, nil)
	var want []string
	for i := 0; i < 40; i++ {
		s := fmt.Sprintf("record %02d %s", i, strings.Repeat("x", 40))
		want = append(want, s)
		d.AddRR(t, fmt.Sprintf(`big.test. 60 IN TXT "%s"`, s))
	}
	got, err := r.LookupTXT(context.Background(), "big.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("got %d records, want %d", len(got), len(want))
	}
	if st := r.Stats(); st.TCPRetries != 1 || st.Upstream != 2 {
		t.Errorf("stats %+v, want one TCP retry", st)
	}
}

// gatedServer is a real DNS server on loopback whose answers wait until the
// test opens the gate, so concurrent lookups surely overlap.
type gatedServer struct {
	addr    string
	gate    chan struct{}
	queries atomic.Int64
}

func startGated(t *testing.T, answer func(q dns.Question, m *dns.Msg)) *gatedServer {
	t.Helper()
	g := &gatedServer{gate: make(chan struct{})}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.addr = pc.LocalAddr().String()
	started := make(chan struct{})
	srv := &dns.Server{PacketConn: pc, NotifyStartedFunc: func() { close(started) },
		Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
			g.queries.Add(1)
			select {
			case <-g.gate:
			case <-time.After(10 * time.Second):
			}
			m := new(dns.Msg)
			m.SetReply(req)
			answer(req.Question[0], m)
			_ = w.WriteMsg(m)
		})}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return g
}

func txtAnswer(q dns.Question, m *dns.Msg) {
	m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
		Txt: []string{"one ", "answer"}})
}

// waitFor polls cond for at most 5s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestSingleflight(t *testing.T) {
	g := startGated(t, txtAnswer)
	r, err := New(Config{Servers: []string{g.addr}, Timeout: 5 * time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			txt, err := r.LookupTXT(context.Background(), "flight.test")
			if err == nil && (len(txt) != 1 || txt[0] != "one answer") {
				err = fmt.Errorf("answer %q", txt)
			}
			errs <- err
		}()
	}
	waitFor(t, "all lookups to miss the cache", func() bool { return r.Stats().CacheMisses == n })
	time.Sleep(50 * time.Millisecond) // let the last ones reach singleflight
	close(g.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if q := g.queries.Load(); q != 1 {
		t.Errorf("upstream saw %d queries, want 1", q)
	}
	if st := r.Stats(); st.Shared != n {
		t.Errorf("stats %+v, want %d shared", st, n)
	}
}

func TestSingleflightCallerCancelDoesNotFailOthers(t *testing.T) {
	g := startGated(t, txtAnswer)
	r, err := New(Config{Servers: []string{g.addr}, Timeout: 5 * time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := r.LookupTXT(ctx, "flight.test")
		first <- err
	}()
	waitFor(t, "the first query upstream", func() bool { return g.queries.Load() == 1 })
	other := make(chan error, 1)
	go func() {
		_, err := r.LookupTXT(context.Background(), "flight.test")
		other <- err
	}()
	waitFor(t, "the second lookup", func() bool { return r.Stats().CacheMisses == 2 })
	cancel()
	err = <-first
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTemporary || !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled caller: %v", err)
	}
	close(g.gate)
	if err := <-other; err != nil {
		t.Errorf("other caller failed: %v", err)
	}
	if q := g.queries.Load(); q != 1 {
		t.Errorf("upstream saw %d queries, want 1", q)
	}
	// The flight filled the cache.
	if _, err := r.LookupTXT(context.Background(), "flight.test"); err != nil || g.queries.Load() != 1 {
		t.Errorf("cache after flight: %v, %d queries", err, g.queries.Load())
	}
}

func TestMismatchedQuestionRejected(t *testing.T) {
	g := startGated(t, func(q dns.Question, m *dns.Msg) {
		m.Question[0].Name = "other.test."
		m.Answer = append(m.Answer, &dns.TXT{Hdr: dns.RR_Header{Name: "other.test.", Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
			Txt: []string{"spoofed"}})
	})
	close(g.gate)
	r, err := New(Config{Servers: []string{g.addr}, Timeout: time.Second, Attempts: 1})
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.LookupTXT(context.Background(), "real.test")
	de, ok := err.(*net.DNSError)
	if !ok || !de.IsTemporary || de.Err != errTextMismatch {
		t.Errorf("got %v, want a temporary mismatch error", err)
	}
}

func TestCollectors(t *testing.T) {
	_, r, _ := setup(t, nil)
	reg := prometheus.NewRegistry()
	for _, c := range r.Collectors() {
		if err := reg.Register(c); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	_, _ = r.LookupTXT(ctx, "example.org")
	_, _ = r.LookupTXT(ctx, "example.org")
	_, _ = r.LookupTXT(ctx, "nope.example.org")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			for _, lp := range m.GetLabel() {
				key += "/" + lp.GetValue()
			}
			switch {
			case m.Counter != nil:
				got[key] = m.GetCounter().GetValue()
			case m.Histogram != nil:
				got[key] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	want := map[string]float64{
		"mxguard_resolver_queries_total/TXT":             3,
		"mxguard_resolver_cache_hits_total/TXT":          1,
		"mxguard_resolver_failures_total/nxdomain":       1,
		"mxguard_resolver_upstream_duration_seconds/udp": 2,
		"mxguard_resolver_failures_total/servfail":       0,
		"mxguard_resolver_upstream_duration_seconds/tcp": 0,
		"mxguard_resolver_queries_total/A":               0,
		"mxguard_resolver_failures_total/timeout":        0,
		"mxguard_resolver_failures_total/nodata":         0,
		"mxguard_resolver_cache_hits_total/MX":           0,
		"mxguard_resolver_failures_total/invalid":        0,
		"mxguard_resolver_queries_total/PTR":             0,
		"mxguard_resolver_failures_total/network":        0,
		"mxguard_resolver_failures_total/refused":        0,
		"mxguard_resolver_failures_total/canceled":       0,
		"mxguard_resolver_failures_total/mismatch":       0,
		"mxguard_resolver_failures_total/cname_chain":    0,
		"mxguard_resolver_failures_total/rcode":          0,
		"mxguard_resolver_queries_total/AAAA":            0,
		"mxguard_resolver_queries_total/MX":              0,
		"mxguard_resolver_cache_hits_total/A":            0,
		"mxguard_resolver_cache_hits_total/AAAA":         0,
		"mxguard_resolver_cache_hits_total/PTR":          0,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestHostPort(t *testing.T) {
	tests := map[string]string{
		"127.0.0.1:5353": "127.0.0.1:5353",
		"127.0.0.1":      "127.0.0.1:53",
		"::1":            "[::1]:53",
		"[::1]:53":       "[::1]:53",
		"dns.internal":   "dns.internal:53",
		"":               "error",
		"1.2.3.4:0":      "error",
		"1.2.3.4:x":      "error",
	}
	for in, want := range tests {
		got, err := hostPort(in)
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("hostPort(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCanonical(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Example.ORG.", "example.org"},
		{"example.org", "example.org"},
		{".", ""},
		{"a b.test", `a\ b.test`},
		{"caf\xc3\xa9.test", `caf\195\169.test`},
		{`back\slash.test`, `back\\slash.test`},
	}
	for _, tc := range tests {
		got, ok := canonical(tc.in)
		if !ok || got != tc.want {
			t.Errorf("canonical(%q) = %q %v, want %q", tc.in, got, ok, tc.want)
		}
	}
	if got := unescapeTXT(`a\"b\\c\255\000d\`); got != "a\"b\\c\xff\x00d\\" {
		t.Errorf("unescapeTXT = %q", got)
	}
}

func TestOddNamesRoundTrip(t *testing.T) {
	d, r, _ := setup(t, nil)
	d.AddRRs(&dns.TXT{Hdr: dns.RR_Header{Name: `caf\195\169.test.`, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{"utf8 label"}})
	got, err := r.LookupTXT(context.Background(), "CAF\xc3\xa9.test")
	if err != nil || len(got) != 1 || got[0] != "utf8 label" {
		t.Errorf("got %q %v", got, err)
	}
}

func BenchmarkCacheHit(b *testing.B) {
	_, r, _ := setup(b, nil)
	ctx := context.Background()
	if _, err := r.LookupTXT(ctx, "example.org"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := r.LookupTXT(ctx, "example.org"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCacheHitParallel(b *testing.B) {
	_, r, _ := setup(b, nil)
	ctx := context.Background()
	if _, err := r.LookupNetIP(ctx, "ip4", "mx1.example.org"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.LookupNetIP(ctx, "ip4", "mx1.example.org"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// The auth package's Resolver interface (auth/resolver.go), restated here so
// this leaf package's tests do not import auth.
var _ interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
} = (*Resolver)(nil)
