package filter_test

import (
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/filter"
	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/ratelimit"
)

func sharedLimits(t testing.TB, addr string, specs map[string]filter.RateSpec) *filter.RateLimits {
	c := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true, MaxRetries: 1, DialerRetries: 1,
		DialTimeout: 200 * time.Millisecond, ReadTimeout: 200 * time.Millisecond, WriteTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { c.Close() })
	fb := ratelimit.NewFallback(ratelimit.NewRedis(c, ratelimit.RedisOptions{Prefix: "mxg:test:"}),
		ratelimit.NewMemory(ratelimit.MemoryOptions{}), ratelimit.FallbackOptions{Timeout: 200 * time.Millisecond})
	return filter.NewRateLimits(fb, specs, 0, 0)
}

// TestTwoGatewaysShareOneLimit: two gateways on one Redis enforce one
// combined limit — 30 messages spread over both, limit 10 → exactly 10 go
// through, the rest get 451 4.7.0.
func TestTwoGatewaysShareOneLimit(t *testing.T) {
	r := testenv.StartRedis(t)
	specs := map[string]filter.RateSpec{"client_ip": {Limit: ratelimit.Limit{Rate: 10, Per: time.Hour, Burst: 10}}}
	var gws []*gw
	for i := 0; i < 2; i++ {
		eng, err := policy.New(policy.Options{Enforce: true})
		if err != nil {
			t.Fatal(err)
		}
		gws = append(gws, startGW(t, func(o *filter.Options, _ *gwSetup) {
			o.Policy = eng
			o.Limiter = sharedLimits(t, r.Addr, specs)
		}))
	}
	accepted, limited := 0, 0
	for i := 0; i < 30; i++ {
		g := gws[i%2]
		cl := g.greet("client.example.org")
		cl.cmd("MAIL FROM:<alice@example.org>", 250)
		cl.last = "RCPT"
		cl.send("RCPT TO:<bob@corp.test>\r\n")
		code, text := cl.reply()
		switch code {
		case 250:
			accepted++
			cl.cmd("DATA", 354)
			cl.send(msg("alice@example.org", "bob@corp.test", "x", "x\r\n") + ".\r\n")
			cl.expect(250)
		case 451:
			limited++
			if !strings.Contains(text, "4.7.0") || !strings.Contains(text, "ratelimit") {
				t.Errorf("limited reply %q", text)
			}
		default:
			t.Fatalf("unexpected %d %q", code, text)
		}
		cl.c.Close()
	}
	if accepted != 10 || limited != 20 {
		t.Fatalf("accepted %d, limited %d; want 10 and 20", accepted, limited)
	}
	if n := len(gws[0].down.Messages()) + len(gws[1].down.Messages()); n != 10 {
		t.Errorf("downstreams got %d messages", n)
	}
}

// TestRedisDownMailFlows: with Redis gone, facts carry backend_error, the
// local limiter still counts, and mail is not refused for it.
func TestRedisDownMailFlows(t *testing.T) {
	r := testenv.StartRedis(t)
	eng, err := policy.New(policy.Options{Enforce: true})
	if err != nil {
		t.Fatal(err)
	}
	specs := map[string]filter.RateSpec{"client_ip": {Limit: ratelimit.Limit{Rate: 100, Per: time.Hour}}}
	g := startGW(t, func(o *filter.Options, _ *gwSetup) {
		o.Policy = eng
		o.Limiter = sharedLimits(t, r.Addr, specs)
	})
	r.Stop()
	for i := 0; i < 3; i++ {
		start := time.Now()
		code, text := g.sendMail("alice@example.org", []string{"bob@corp.test"}, msg("alice@example.org", "bob@corp.test", "x", "x\r\n"))
		if code != 250 {
			t.Fatalf("with Redis down: %d %q", code, text)
		}
		if el := time.Since(start); el > 3*time.Second {
			t.Errorf("a transaction took %v with Redis down", el)
		}
	}
}

// TestRefusedRecipientDoesNotRefuseMessage: a recipient refused for its
// own rate limit must not make the DATA stage refuse the message for the
// recipients that were accepted.
func TestRefusedRecipientDoesNotRefuseMessage(t *testing.T) {
	eng, err := policy.New(policy.Options{Enforce: true})
	if err != nil {
		t.Fatal(err)
	}
	specs := map[string]filter.RateSpec{"rcpt": {Limit: ratelimit.Limit{Rate: 1, Per: time.Hour, Burst: 1}}}
	lim := filter.NewRateLimits(ratelimit.NewFallback(nil, ratelimit.NewMemory(ratelimit.MemoryOptions{}), ratelimit.FallbackOptions{}), specs, 0, 0)
	g := startGW(t, func(o *filter.Options, _ *gwSetup) {
		o.Policy = eng
		o.Limiter = lim
	})
	// Use up carol's allowance.
	if code, text := g.sendMail("alice@example.org", []string{"carol@corp.test"}, msg("alice@example.org", "carol@corp.test", "1", "x\r\n")); code != 250 {
		t.Fatalf("first: %d %q", code, text)
	}
	cl := g.greet("client.example.org")
	cl.cmd("MAIL FROM:<alice@example.org>", 250)
	cl.cmd("RCPT TO:<bob@corp.test>", 250)
	cl.cmd("RCPT TO:<carol@corp.test>", 451) // over her limit
	cl.cmd("DATA", 354)
	cl.send(msg("alice@example.org", "bob@corp.test", "2", "x\r\n") + ".\r\n")
	cl.expect(250)
}
