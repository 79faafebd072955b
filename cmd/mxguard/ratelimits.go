package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/filter"
	"github.com/mxguard/mxguard/ratelimit"
)

// newRateLimits builds the limiter: the in-process one, with Redis in front
// of it when configured (the memory limiter then only decides while Redis is
// unreachable).
func newRateLimits(cfg *config.Config, log *slog.Logger, reg prometheus.Registerer) (*filter.RateLimits, func(), error) {
	rc := cfg.Ratelimit
	mem := ratelimit.NewMemory(ratelimit.MemoryOptions{MaxKeys: rc.MaxKeys})
	var shared ratelimit.Backend
	closeFn := func() {}
	if rc.Backend == "redis" {
		client := newRedisClient(rc.Redis)
		r := ratelimit.NewRedis(client, ratelimit.RedisOptions{Prefix: rc.KeyPrefix, GatewayID: rc.GatewayID})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if err := r.Warm(ctx); err != nil {
			log.Warn("redis rate limiter not reachable at start; the local limiter decides until it is", "err", err)
		}
		cancel()
		shared = r
		closeFn = func() { client.Close() }
	}
	fb := ratelimit.NewFallback(shared, mem, ratelimit.FallbackOptions{
		Timeout:  rc.Redis.Timeout,
		Failures: rc.Breaker.Failures,
		Cooldown: rc.Breaker.Cooldown,
		// newRedisClient sets ContextTimeoutEnabled.
		PrimaryHonoursDeadline: shared != nil,
		OnStateChange: func(from, to ratelimit.BreakerState, err error) {
			log.Warn("rate-limit backend state changed", "from", from.String(), "to", to.String(), "err", err)
		},
	})
	reg.MustRegister(fb.Collectors()...)
	specs := make(map[string]filter.RateSpec, len(rc.Limits))
	for name, s := range rc.Limits {
		specs[name] = filter.RateSpec{Limit: ratelimit.Limit{Rate: s.Rate, Per: s.Per, Burst: s.Burst}, SPFPassOnly: s.SPFPassOnly}
	}
	return filter.NewRateLimits(fb, specs, rc.Concurrency.MaxPerNet, rc.Concurrency.LeaseTTL), closeFn, nil
}
