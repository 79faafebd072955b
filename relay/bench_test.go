package relay_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/relay"
)

func benchMessage() string {
	var b strings.Builder
	b.WriteString("From: alice@example.org\r\nTo: bob@corp.example\r\nSubject: bench\r\n\r\n")
	for b.Len() < 4096-2 {
		b.WriteString("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456\r\n")
	}
	return b.String()[:4094] + "\r\n"
}

func benchRelay(b *testing.B, tlsOn, pooled bool) (*testenv.Downstream, *relay.Relay) {
	d := testenv.StartDownstream(b, testenv.DownstreamOptions{TLS: tlsOn, Discard: true})
	mode := relay.TLSNone
	if tlsOn {
		mode = relay.TLSRequired
	}
	opts := testOptions(b)
	if !pooled {
		opts.PoolMaxIdle = -1
	}
	return d, newRelay(b, map[string]relay.Route{"corp.example": {Hosts: []string{d.Addr()}, TLS: mode}}, opts)
}

func reportRate(b *testing.B, start time.Time) {
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkRelayDeliver: one 4 KiB message per Deliver (Open, MAIL, RCPT,
// DATA, Close), the quarantine-release path and the shape of every inbound
// session's downstream use. unpooled: every message dials (TCP, greeting,
// EHLO, STARTTLS) and QUITs; pooled: Open takes the idle session (one NOOP
// probe) and Close returns it.
func BenchmarkRelayDeliver(b *testing.B) {
	for _, tc := range []struct {
		name string
		tls  bool
	}{{"plain", false}, {"starttls", true}} {
		for _, pooled := range []bool{false, true} {
			name := tc.name + "/unpooled"
			if pooled {
				name = tc.name + "/pooled"
			}
			b.Run(name, func(b *testing.B) {
				d, r := benchRelay(b, tc.tls, pooled)
				msg := benchMessage()
				rcpts := []string{"bob@corp.example"}
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < b.N; i++ {
					if err := r.Deliver(context.Background(), "corp.example", "alice@example.org", rcpts, strings.NewReader(msg)); err != nil {
						b.Fatal(err)
					}
				}
				reportRate(b, start)
				b.StopTimer()
				if d.Delivered() != b.N {
					b.Fatalf("delivered %d of %d", d.Delivered(), b.N)
				}
			})
		}
	}
}

// BenchmarkRelayDeliverParallel: Deliver from GOMAXPROCS*4 goroutines at
// once, pooled and not; the pool's lock and its bound per host under
// contention.
func BenchmarkRelayDeliverParallel(b *testing.B) {
	for _, pooled := range []bool{false, true} {
		name := "unpooled"
		if pooled {
			name = "pooled"
		}
		b.Run(name, func(b *testing.B) {
			d, r := benchRelay(b, false, pooled)
			msg := benchMessage()
			rcpts := []string{"bob@corp.example"}
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.SetParallelism(4)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := r.Deliver(context.Background(), "corp.example", "alice@example.org", rcpts, strings.NewReader(msg)); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b, start)
			b.StopTimer()
			if d.Delivered() != b.N {
				b.Fatalf("delivered %d of %d", d.Delivered(), b.N)
			}
		})
	}
}

// BenchmarkRelayConnReuse: 4 KiB messages back to back on one open Conn,
// the ceiling a connection pool could reach.
func BenchmarkRelayConnReuse(b *testing.B) {
	d, r := benchRelay(b, false, false)
	c, err := r.Open(context.Background(), "corp.example")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	msg := benchMessage()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := c.Mail("alice@example.org", nil); err != nil {
			b.Fatal(err)
		}
		if err := c.Rcpt("bob@corp.example", nil); err != nil {
			b.Fatal(err)
		}
		if err := c.Data(strings.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, start)
	b.StopTimer()
	if d.Delivered() != b.N {
		b.Fatalf("delivered %d of %d", d.Delivered(), b.N)
	}
}

// BenchmarkRelayMaildir: one 4 KiB message into a maildir (two fsyncs).
func BenchmarkRelayMaildir(b *testing.B) {
	r := newRelay(b, map[string]relay.Route{"demo.test": {Maildir: b.TempDir()}}, testOptions(b))
	msg := benchMessage()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := r.Deliver(context.Background(), "demo.test", "a@example.org", []string{"x@demo.test"}, strings.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
	reportRate(b, start)
}
