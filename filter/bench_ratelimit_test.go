package filter_test

import (
	"testing"
	"time"

	"github.com/mxguard/mxguard/filter"
	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/ratelimit"
)

// BenchmarkGatewayRateLimits: gateway throughput (4 KiB messages, one
// reused connection, shipped rules) with rate limits off, on in memory, and
// on in Redis. The limits are high enough never to trigger: this measures
// the cost of counting.
func BenchmarkGatewayRateLimits(b *testing.B) {
	body := cleanMessage(4 << 10)
	specs := map[string]filter.RateSpec{}
	for _, d := range []string{"client_ip", "client_net", "helo", "mail_from", "mail_from_domain", "client_ip_rcpts", "rcpt", "rcpt_domain", "client_ip_bytes", "dkim_domain"} {
		specs[d] = filter.RateSpec{Limit: ratelimit.Limit{Rate: 1 << 30, Per: time.Second, Burst: 1 << 30}}
	}
	eng, err := policy.New(policy.Options{Enforce: true})
	if err != nil {
		b.Fatal(err)
	}
	for _, mode := range []string{"off", "memory", "redis"} {
		b.Run("limits="+mode, func(b *testing.B) {
			var lim *filter.RateLimits
			switch mode {
			case "memory":
				lim = filter.NewRateLimits(ratelimit.NewFallback(nil, ratelimit.NewMemory(ratelimit.MemoryOptions{}), ratelimit.FallbackOptions{}), specs, 0, 0)
			case "redis":
				r := testenv.StartRedis(b)
				lim = sharedLimits(b, r.Addr, specs)
			}
			g := startGW(b, func(o *filter.Options, s *gwSetup) {
				s.downOpts.Discard = true
				o.Policy = eng
				o.Limiter = lim
			})
			cl := g.greet("client.example.org")
			send := func() {
				cl.cmd("MAIL FROM:<alice@example.org>", 250)
				cl.cmd("RCPT TO:<bob@corp.test>", 250)
				cl.cmd("DATA", 354)
				cl.send(string(body) + ".\r\n")
				cl.expect(250)
			}
			send() // warm the caches
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				send()
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
