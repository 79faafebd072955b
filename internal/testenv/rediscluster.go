package testenv

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// RedisCluster is a Redis Cluster of n primaries (no replicas) started for
// one test; every node is a *Redis stopped when the test ends.
type RedisCluster struct {
	Nodes []*Redis
	Addrs []string
}

// StartRedisCluster starts n (>= 3) redis-server nodes with cluster mode on,
// joins them with `redis-cli --cluster create`, and waits until every node
// reports cluster_state:ok. The cluster bus port is chosen free explicitly
// (--cluster-port) because the default port+10000 may be taken or out of
// range.
func StartRedisCluster(tb testing.TB, n int) *RedisCluster {
	tb.Helper()
	if n < 3 {
		tb.Fatalf("redis cluster needs at least 3 primaries, got %d", n)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		tb.Fatalf("redis-cli not found on PATH (make test installs it): %v", err)
	}
	c := &RedisCluster{}
	for i := 0; i < n; i++ {
		r := StartRedis(tb, "--cluster-enabled", "yes", "--cluster-port", strconv.Itoa(FreePort(tb)),
			"--cluster-node-timeout", "2000", "--cluster-config-file", "nodes.conf")
		c.Nodes = append(c.Nodes, r)
		c.Addrs = append(c.Addrs, r.Addr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, r := range c.Nodes {
		for {
			out, err := exec.CommandContext(ctx, cli, "-h", "127.0.0.1", "-p", strconv.Itoa(r.Port), "cluster", "info").Output()
			if err == nil && strings.Contains(string(out), "cluster_state:ok") {
				break
			}
			select {
			case <-ctx.Done():
				tb.Fatalf("redis cluster node %s not ok: %v %s", r.Addr, err, out)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return c
}
