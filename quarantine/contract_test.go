package quarantine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// clock is a controllable store clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// backend opens store instances over one shared storage: every call to open
// is a separate instance, as a separate process would have.
type backend struct {
	name string
	// setup prepares fresh storage and returns the opener and a function
	// that damages an item's metadata.
	setup func(t testing.TB) (open func(t testing.TB, c *clock, max int64) Admin, damage func(t testing.TB, id string))
}

func dirBackend() backend {
	return backend{name: "dir", setup: func(t testing.TB) (func(testing.TB, *clock, int64) Admin, func(testing.TB, string)) {
		dir := filepath.Join(t.TempDir(), "q")
		open := func(t testing.TB, c *clock, max int64) Admin {
			s, err := OpenDir(dir, DirOptions{MaxMessageBytes: max, Now: c.Now})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		damage := func(t testing.TB, id string) {
			if err := os.WriteFile(filepath.Join(dir, id+".json"), []byte(`{"id": "`+id+`", "status": `), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return open, damage
	}}
}

func redisBackend(t testing.TB, name string, cluster bool) backend {
	// One server per backend, started by the parent test; each setup gets
	// its own key prefix.
	var newClient func() redis.UniversalClient
	if cluster {
		r := startCluster(t)
		newClient = func() redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{r.Addr}})
		}
	} else {
		r := testenv.StartRedis(t)
		newClient = func() redis.UniversalClient {
			return redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{r.Addr}})
		}
	}
	var n atomic.Int64
	return backend{name: name, setup: func(t testing.TB) (func(testing.TB, *clock, int64) Admin, func(testing.TB, string)) {
		prefix := fmt.Sprintf("t%d:", n.Add(1))
		open := func(t testing.TB, c *clock, max int64) Admin {
			cl := newClient()
			t.Cleanup(func() { cl.Close() })
			s, err := NewRedis(cl, RedisOptions{KeyPrefix: prefix, Retention: 24 * time.Hour * 365, MaxMessageBytes: max, Now: c.Now})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		damage := func(t testing.TB, id string) {
			cl := newClient()
			defer cl.Close()
			if err := cl.HSet(context.Background(), "{"+prefix+"}i:"+id, "meta", "{not json").Err(); err != nil {
				t.Fatal(err)
			}
		}
		return open, damage
	}}
}

// startCluster runs a one-node Redis Cluster holding every slot, which is
// enough to catch CROSSSLOT mistakes in multi-key operations.
func startCluster(t testing.TB) *testenv.Redis {
	r := testenv.StartRedis(t, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
	c := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "CLUSTER", "ADDSLOTSRANGE", "0", "16383").Err(); err != nil {
		t.Fatalf("cluster addslots: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		info, _ := c.ClusterInfo(ctx).Result()
		if strings.Contains(info, "cluster_state:ok") {
			return r
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("one-node cluster did not reach cluster_state:ok")
	return nil
}

func backends(t testing.TB) []backend {
	return []backend{dirBackend(), redisBackend(t, "redis", false), redisBackend(t, "redis-cluster", true)}
}

var ctx = context.Background()

func sampleMeta(i int) Meta {
	return Meta{
		ClientIP: fmt.Sprintf("192.0.2.%d", i), Helo: "mail.example.org", PTR: "mail.example.org", TLS: "TLS 1.3",
		MailFrom: fmt.Sprintf("alice%d@example.org", i), Rcpts: []string{"bob@corp.example", "carol@corp.example"},
		HeaderFrom: "Alice <alice@example.org>", Subject: fmt.Sprintf("invoice %d", i), MessageID: fmt.Sprintf("<m%d@example.org>", i),
		Decision: Decision{Action: "quarantine", PolicyRevision: "rev1", DecisionID: fmt.Sprintf("d-%d", i),
			Reasons: []Reason{{Code: "dmarc_quarantine", Msg: "DMARC failed", Title: "DMARC says quarantine", Description: "The sender's domain asks for failures to be quarantined."}}},
		Auth:  json.RawMessage(`{"spf":{"result":"fail"},"dmarc":{"result":"fail","policy":"quarantine"}}`),
		Route: "corp.example",
	}
}

func sampleMsg(i int, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Authentication-Results: mx.test; dmarc=fail\r\nFrom: alice@example.org\r\nSubject: invoice %d\r\n\r\n", i)
	for b.Len() < size {
		fmt.Fprintf(&b, "line %d of a quarantined message body, repeated to size\r\n", b.Len())
	}
	return b.Bytes()
}

func readAll(t testing.TB, s Store, id string) []byte {
	t.Helper()
	rc, err := s.Open(ctx, id)
	if err != nil {
		t.Fatalf("open %s: %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func ids(ms []Meta) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// countingDeliverer stands in for the downstream: it counts deliveries and
// keeps what it got.
type countingDeliverer struct {
	mu    sync.Mutex
	n     atomic.Int64
	fail  error
	delay time.Duration
	got   []delivery
}

type delivery struct {
	domain, from string
	rcpts        []string
	msg          []byte
}

func (d *countingDeliverer) Deliver(ctx context.Context, domain, from string, rcpts []string, msg io.Reader) error {
	b, err := io.ReadAll(msg)
	if err != nil {
		return err
	}
	if d.delay > 0 {
		time.Sleep(d.delay)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.fail != nil {
		return d.fail
	}
	d.n.Add(1)
	d.got = append(d.got, delivery{domain, from, rcpts, b})
	return nil
}

func TestContract(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			runContract(t, b)
		})
	}
}

func runContract(t *testing.T, b backend) {
	// fresh gives each subtest its own storage.
	fresh := func(t *testing.T) (Admin, *clock, func(testing.TB, *clock, int64) Admin, func(testing.TB, string)) {
		open, damage := b.setup(t)
		c := newClock()
		return open(t, c, 1<<20), c, open, damage
	}

	t.Run("PutGetOpen", func(t *testing.T) {
		s, c, _, _ := fresh(t)
		for _, size := range []int{0, 300, 64 << 10} { // 64 KiB exercises compression
			m := sampleMeta(1)
			msg := sampleMsg(1, size)
			id, err := s.Put(ctx, m, bytes.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			if !ValidID(id) {
				t.Fatalf("Put returned invalid id %q", id)
			}
			got, err := s.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != id || got.Status != StatusHeld || got.Version != MetaVersion || !got.Received.Equal(c.Now()) ||
				got.Size != int64(len(msg)) || got.MailFrom != m.MailFrom || strings.Join(got.Rcpts, ",") != strings.Join(m.Rcpts, ",") ||
				got.Decision.Reasons[0].Title != m.Decision.Reasons[0].Title || got.Route != "corp.example" || got.TLS != "TLS 1.3" {
				t.Fatalf("Get = %+v", got)
			}
			if !bytes.Equal(compactJSON(t, got.Auth), compactJSON(t, m.Auth)) {
				t.Fatalf("auth = %s", got.Auth)
			}
			if len(got.History) != 1 || got.History[0].Action != "held" {
				t.Fatalf("history = %+v", got.History)
			}
			if body := readAll(t, s, id); !bytes.Equal(body, msg) {
				t.Fatalf("Open returned %d bytes, want %d", len(body), len(msg))
			}
		}
		missing := idFloor(c.Now().Add(time.Hour))
		if _, err := s.Get(ctx, missing); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
		}
		if _, err := s.Open(ctx, missing); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open(missing) = %v, want ErrNotFound", err)
		}
	})

	t.Run("TooLarge", func(t *testing.T) {
		_, c, open, _ := fresh(t)
		s := open(t, c, 100)
		if _, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 200))); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Put(200 bytes, cap 100) = %v, want ErrTooLarge", err)
		}
		if _, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(make([]byte, 100))); err != nil {
			t.Fatalf("Put(exactly the cap) = %v", err)
		}
		items, _, err := s.List(ctx, Filter{})
		if err != nil || len(items) != 1 {
			t.Fatalf("List after refused Put = %d items, %v; want 1", len(items), err)
		}
	})

	t.Run("ListNewestFirstAndPaging", func(t *testing.T) {
		s, c, _, _ := fresh(t)
		var want []string
		for i := 0; i < 7; i++ {
			id, err := s.Put(ctx, sampleMeta(i), bytes.NewReader(sampleMsg(i, 100)))
			if err != nil {
				t.Fatal(err)
			}
			want = append([]string{id}, want...)
			c.Advance(time.Minute)
		}
		var got []string
		cursor := ""
		for page := 0; page < 10; page++ {
			items, next, err := s.List(ctx, Filter{Limit: 3, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			if len(items) > 3 {
				t.Fatalf("page of %d items, limit 3", len(items))
			}
			got = append(got, ids(items)...)
			if next == "" {
				break
			}
			cursor = next
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Fatalf("paged list\n got %v\nwant %v", got, want)
		}
		all, next, err := s.List(ctx, Filter{Limit: 7})
		if err != nil || next != "" || len(all) != 7 {
			t.Fatalf("List(limit 7) = %d items, next %q, %v", len(all), next, err)
		}
		if _, _, err := s.List(ctx, Filter{Cursor: "../x"}); !errors.Is(err, ErrBadID) {
			t.Fatalf("List(bad cursor) = %v, want ErrBadID", err)
		}
		if _, _, err := s.List(ctx, Filter{Status: "bogus"}); err == nil {
			t.Fatal("List(status bogus) succeeded")
		}
	})

	t.Run("Filters", func(t *testing.T) {
		s, c, _, _ := fresh(t)
		t0 := c.Now()
		put := func(m Meta) string {
			id, err := s.Put(ctx, m, bytes.NewReader(sampleMsg(0, 50)))
			if err != nil {
				t.Fatal(err)
			}
			c.Advance(time.Hour)
			return id
		}
		a := put(sampleMeta(1))
		m2 := sampleMeta(2)
		m2.MailFrom, m2.HeaderFrom = "mallory@evil.test", "mallory@evil.test"
		m2.Rcpts = []string{"dave@other.example"}
		m2.Decision.Reasons = []Reason{{Code: "dangerous_attachment"}}
		bID := put(m2)
		cID := put(sampleMeta(3))
		if _, err := s.Update(ctx, cID, func(m *Meta) error { m.Status = StatusReleased; return nil }); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			f    Filter
			want []string
		}{
			{"all", Filter{}, []string{cID, bID, a}},
			{"since", Filter{Since: t0.Add(30 * time.Minute)}, []string{cID, bID}},
			{"since future", Filter{Since: t0.Add(30 * time.Hour)}, nil},
			{"reason", Filter{Reason: "DANGEROUS_attachment"}, []string{bID}},
			{"from envelope", Filter{From: "alice1@"}, []string{a}},
			{"from header", Filter{From: "Alice <"}, []string{cID, a}},
			{"rcpt", Filter{Rcpt: "dave@"}, []string{bID}},
			{"domain rcpt", Filter{Domain: "corp.example"}, []string{cID, a}},
			{"domain sender", Filter{Domain: "evil.test"}, []string{bID}},
			{"status held", Filter{Status: StatusHeld}, []string{bID, a}},
			{"status released", Filter{Status: StatusReleased}, []string{cID}},
			{"combined", Filter{Status: StatusHeld, Domain: "corp.example"}, []string{a}},
			{"filter with paging", Filter{Status: StatusHeld, Limit: 1}, []string{bID}},
		} {
			items, _, err := s.List(ctx, tc.f)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			if strings.Join(ids(items), " ") != strings.Join(tc.want, " ") {
				t.Errorf("%s: got %v want %v", tc.name, ids(items), tc.want)
			}
		}
		// Paging under a filter continues after the cursor.
		items, next, err := s.List(ctx, Filter{Status: StatusHeld, Limit: 1})
		if err != nil || next == "" {
			t.Fatalf("first filtered page: %v next %q", err, next)
		}
		items, next, err = s.List(ctx, Filter{Status: StatusHeld, Limit: 1, Cursor: next})
		if err != nil || next != "" || len(items) != 1 || items[0].ID != a {
			t.Fatalf("second filtered page: %v %q %v", ids(items), next, err)
		}
	})

	t.Run("UpdateAndDelete", func(t *testing.T) {
		s, c, _, _ := fresh(t)
		id, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 100)))
		if err != nil {
			t.Fatal(err)
		}
		boom := errors.New("boom")
		if _, err := s.Update(ctx, id, func(m *Meta) error { m.Subject = "changed"; return boom }); !errors.Is(err, boom) {
			t.Fatalf("Update with failing fn = %v", err)
		}
		if m, _ := s.Get(ctx, id); m.Subject != "invoice 1" {
			t.Fatalf("failed Update wrote: subject %q", m.Subject)
		}
		m, err := s.Update(ctx, id, func(m *Meta) error { m.Subject = "changed"; m.ID = "q-evil"; return nil })
		if err != nil || m.Subject != "changed" || m.ID != id {
			t.Fatalf("Update = %+v, %v", m, err)
		}
		if _, err := s.Update(ctx, idFloor(c.Now().Add(time.Hour)), func(*Meta) error { return nil }); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Update(missing) = %v", err)
		}
		if err := Delete(ctx, s, id, "rev"); err != nil {
			t.Fatal(err)
		}
		m, err = s.Get(ctx, id)
		if err != nil || m.Status != StatusDeleted || m.History[len(m.History)-1].By != "rev" {
			t.Fatalf("after delete: %+v %v", m, err)
		}
		if _, err := s.Open(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Open(deleted) = %v, want ErrNotFound", err)
		}
		if err := Delete(ctx, s, id, "rev"); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("second Delete = %v, want ErrNotHeld", err)
		}
		if err := Release(ctx, s, id, "rev", &countingDeliverer{}); !errors.Is(err, ErrNotHeld) {
			t.Fatalf("Release(deleted) = %v, want ErrNotHeld", err)
		}
	})

	t.Run("PurgeWithClock", func(t *testing.T) {
		s, c, _, _ := fresh(t)
		t0 := c.Now()
		var all []string
		for _, age := range []time.Duration{0, 10 * 24 * time.Hour, 40 * 24 * time.Hour} {
			c.Set(t0.Add(age))
			id, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 100)))
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, id)
		}
		if err := Delete(ctx, s, all[1], "rev"); err != nil {
			t.Fatal(err)
		}
		c.Set(t0.Add(41 * 24 * time.Hour))
		n, err := Sweep(ctx, s, 30*24*time.Hour, c.Now)
		if err != nil || n != 2 {
			t.Fatalf("Sweep = %d, %v; want 2", n, err)
		}
		items, _, _ := s.List(ctx, Filter{})
		if strings.Join(ids(items), " ") != all[2] {
			t.Fatalf("after sweep: %v, want [%s]", ids(items), all[2])
		}
		for _, id := range all[:2] {
			if _, err := s.Get(ctx, id); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get(purged) = %v", err)
			}
		}
		if n, err := Sweep(ctx, s, 0, c.Now); n != 0 || err != nil {
			t.Fatalf("Sweep(retention 0) = %d, %v", n, err)
		}
	})

	t.Run("Release", func(t *testing.T) {
		s, _, _, _ := fresh(t)
		msg := sampleMsg(1, 5000)
		id, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		d := &countingDeliverer{}
		if err := Release(ctx, s, id, "alice.admin", d); err != nil {
			t.Fatal(err)
		}
		if d.n.Load() != 1 {
			t.Fatalf("delivered %d times", d.n.Load())
		}
		got := d.got[0]
		hdr := "X-MXGuard-Released: by=alice.admin; at="
		if got.domain != "corp.example" || got.from != "alice1@example.org" || len(got.rcpts) != 2 ||
			!bytes.HasPrefix(got.msg, []byte(hdr)) || !bytes.HasSuffix(got.msg, msg) ||
			!bytes.Contains(got.msg, []byte("; id="+id+"\r\nAuthentication-Results:")) {
			t.Fatalf("delivery = %+v\n%q", got, got.msg[:120])
		}
		m, _ := s.Get(ctx, id)
		if m.Status != StatusReleased {
			t.Fatalf("status %s", m.Status)
		}
		var actions []string
		for _, e := range m.History {
			actions = append(actions, e.Action+":"+e.By)
		}
		if strings.Join(actions, " ") != "held:mxguard claim:alice.admin released:alice.admin" {
			t.Fatalf("history %v", actions)
		}
		if err := Release(ctx, s, id, "bob", d); !errors.Is(err, ErrNotHeld) || d.n.Load() != 1 {
			t.Fatalf("second Release = %v, deliveries %d", err, d.n.Load())
		}
		if err := Release(ctx, s, id, "bad name\r\nX: y", d); err == nil || errors.Is(err, ErrNotHeld) {
			t.Fatalf("Release with header-injecting reviewer = %v", err)
		}
	})

	t.Run("ReleaseFailureReturnsClaim", func(t *testing.T) {
		s, _, _, _ := fresh(t)
		id, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 100)))
		if err != nil {
			t.Fatal(err)
		}
		d := &countingDeliverer{fail: errors.New("451 4.4.1 downstream unreachable")}
		if err := Release(ctx, s, id, "rev", d); err == nil || !strings.Contains(err.Error(), "downstream unreachable") {
			t.Fatalf("Release with failing downstream = %v", err)
		}
		m, _ := s.Get(ctx, id)
		if m.Status != StatusHeld || m.History[len(m.History)-1].Action != "release-failed" {
			t.Fatalf("after failed release: %s %+v", m.Status, m.History)
		}
		d.fail = nil
		if err := Release(ctx, s, id, "rev", d); err != nil || d.n.Load() != 1 {
			t.Fatalf("retry = %v, deliveries %d", err, d.n.Load())
		}
	})

	t.Run("ExactlyOnceRelease", func(t *testing.T) {
		s, c, open, _ := fresh(t)
		other := open(t, c, 1<<20) // a second instance, as another process or gateway
		d := &countingDeliverer{delay: 5 * time.Millisecond}
		const items, racers = 5, 6
		for i := 0; i < items; i++ {
			id, err := s.Put(ctx, sampleMeta(i), bytes.NewReader(sampleMsg(i, 100)))
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			var ok, notHeld atomic.Int64
			start := make(chan struct{})
			for r := 0; r < racers; r++ {
				st := s
				if r%2 == 1 {
					st = other
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					err := Release(ctx, st, id, fmt.Sprintf("racer%d", r), d)
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, ErrNotHeld):
						notHeld.Add(1)
					default:
						t.Errorf("racer %d: %v", r, err)
					}
				}()
			}
			close(start)
			wg.Wait()
			if ok.Load() != 1 || notHeld.Load() != racers-1 {
				t.Fatalf("item %d: %d releases succeeded, %d refused", i, ok.Load(), notHeld.Load())
			}
		}
		if d.n.Load() != items {
			t.Fatalf("%d deliveries for %d items", d.n.Load(), items)
		}
	})

	t.Run("BadIDs", func(t *testing.T) {
		s, c, _, _ := fresh(t)
		good, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 10)))
		if err != nil {
			t.Fatal(err)
		}
		_ = c
		for _, id := range badIDs(good) {
			if _, err := s.Get(ctx, id); !errors.Is(err, ErrBadID) {
				t.Errorf("Get(%q) = %v", trunc(id), err)
			}
			if _, err := s.Open(ctx, id); !errors.Is(err, ErrBadID) {
				t.Errorf("Open(%q) = %v", trunc(id), err)
			}
			if _, err := s.Update(ctx, id, func(*Meta) error { return nil }); !errors.Is(err, ErrBadID) {
				t.Errorf("Update(%q) = %v", trunc(id), err)
			}
			if err := s.Delete(ctx, id, Event{}); !errors.Is(err, ErrBadID) {
				t.Errorf("Delete(%q) = %v", trunc(id), err)
			}
			if err := Release(ctx, s, id, "rev", &countingDeliverer{}); !errors.Is(err, ErrBadID) {
				t.Errorf("Release(%q) = %v", trunc(id), err)
			}
			if _, _, err := s.List(ctx, Filter{Cursor: id}); id != "" && !errors.Is(err, ErrBadID) {
				t.Errorf("List(cursor %q) = %v", trunc(id), err)
			}
		}
		// The error message stays short even for a 10 kB id.
		_, err = s.Get(ctx, strings.Repeat("a", 10_000))
		if len(err.Error()) > 200 {
			t.Fatalf("error for a 10 kB id is %d bytes", len(err.Error()))
		}
	})

	t.Run("DamagedMetadata", func(t *testing.T) {
		s, c, _, damage := fresh(t)
		okID, _ := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 10)))
		c.Advance(time.Second)
		badID, err := s.Put(ctx, sampleMeta(2), bytes.NewReader(sampleMsg(2, 10)))
		if err != nil {
			t.Fatal(err)
		}
		damage(t, badID)
		items, _, err := s.List(ctx, Filter{})
		if err != nil || len(items) != 2 {
			t.Fatalf("List = %v, %v", ids(items), err)
		}
		if items[0].ID != badID || items[0].Status != StatusDamaged || items[0].Damaged == "" || items[1].ID != okID {
			t.Fatalf("damaged item listed as %+v", items[0])
		}
		if only, _, _ := s.List(ctx, Filter{Status: StatusDamaged}); len(only) != 1 {
			t.Fatalf("List(status damaged) = %v", ids(only))
		}
		if only, _, _ := s.List(ctx, Filter{Status: StatusHeld}); len(only) != 1 || only[0].ID != okID {
			t.Fatalf("List(status held) = %v", ids(only))
		}
		if _, err := s.Get(ctx, badID); !errors.Is(err, ErrDamaged) {
			t.Fatalf("Get(damaged) = %v", err)
		}
		if err := Release(ctx, s, badID, "rev", &countingDeliverer{}); !errors.Is(err, ErrDamaged) {
			t.Fatalf("Release(damaged) = %v", err)
		}
	})
}

func compactJSON(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func trunc(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// badIDs are ids no caller may turn into a path or key.
func badIDs(good string) []string {
	return []string{
		"",
		"..",
		"../../../../etc/passwd",
		"/etc/passwd",
		"q-../../../../../../../../../..",
		good + "/../x",
		good[:len(good)-1] + "\x00",
		"q-" + strings.Repeat("a", 10_000),
		strings.Repeat("a", 10_000),
		strings.ToUpper(good),
		good[:len(good)-1] + "w", // outside base32hex
		good[:len(good)-1] + "1", // nonzero padding bits: a second spelling
		good + "0",
		good[:len(good)-1],
		"q-aaaaaaaaaaaaaaaaaaaaaaaa\u00e9",
		" " + good[1:],
		good + "\n",
		"{" + DefaultKeyPrefix + "}idx",
		"*",
	}
}

func TestResetClaim(t *testing.T) {
	c := newClock()
	s, _ := openTestDir(t, c)
	id, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(sampleMsg(1, 100)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ResetClaim(ctx, s, id, "rev", 0); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("ResetClaim(held) = %v", err)
	}
	// A Release that died after claiming: the item stays releasing.
	claim := func(at time.Time) {
		s.Update(ctx, id, func(m *Meta) error {
			m.Status = StatusReleasing
			addEvent(m, Event{At: at, Action: "claim", By: "crashed"})
			return nil
		})
	}
	claim(time.Now())
	if err := Release(ctx, s, id, "rev", &countingDeliverer{}); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("Release(releasing) = %v", err)
	}
	if _, err := ResetClaim(ctx, s, id, "rev", StaleClaimAge); !errors.Is(err, ErrConflict) {
		t.Fatalf("ResetClaim(fresh claim) = %v", err)
	}
	s.Update(ctx, id, func(m *Meta) error { m.History = m.History[:1]; return nil })
	claim(time.Now().Add(-time.Hour))
	m, err := ResetClaim(ctx, s, id, "rev", StaleClaimAge)
	if err != nil || m.Status != StatusHeld || m.History[len(m.History)-1].Action != "claim-reset" {
		t.Fatalf("ResetClaim(stale) = %+v, %v", m, err)
	}
	d := &countingDeliverer{}
	if err := Release(ctx, s, id, "rev", d); err != nil || d.n.Load() != 1 {
		t.Fatalf("Release after reset = %v, %d", err, d.n.Load())
	}
}
