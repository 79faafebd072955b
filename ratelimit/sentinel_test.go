package ratelimit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/redis/go-redis/v9"
)

// startSentinel runs one redis sentinel (redis-server --sentinel) watching
// master as "mxg"; it is killed when the test ends.
func startSentinel(t *testing.T, master *testenv.Redis) string {
	t.Helper()
	dir := t.TempDir()
	port := testenv.FreePort(t)
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("port %d\nbind 127.0.0.1\nprotected-mode no\ndir %s\nsentinel monitor mxg 127.0.0.1 %d 1\n", port, dir, master.Port)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testenv.RedisServerPath(t), conf, "--sentinel")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
	})
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// Through Sentinel (UniversalClient with MasterName) the same scripts work.
func TestRedisSentinel(t *testing.T) {
	master := testenv.StartRedis(t)
	addr := startSentinel(t, master)
	c := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{addr}, MasterName: "mxg", ContextTimeoutEnabled: true})
	defer c.Close()
	gw := NewRedis(c, RedisOptions{})
	l := Limit{Rate: 2, Per: time.Hour}
	var res Result
	var err error
	deadline := time.Now().Add(5 * time.Second)
	for { // the sentinel needs a moment before it answers for the master
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		res, err = gw.Allow(ctx, "helo:mx.example", l, 1)
		cancel()
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil || !res.Allowed || res.Remaining != 1 {
		t.Fatalf("via sentinel: %+v %v", res, err)
	}
	// The decision landed on the master.
	direct := NewRedis(newClient(t, master.Addr), RedisOptions{})
	if p, err := direct.Peek(context.Background(), "helo:mx.example", l); err != nil || p.Remaining != 1 {
		t.Fatalf("master view: %+v %v", p, err)
	}
}
