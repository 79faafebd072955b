package filter_test

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/filter"
	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/resolver"
)

// BenchmarkInspectWarmCache: SPF, DKIM (RSA-2048 and Ed25519), DMARC and
// the MIME walk for one 4 KiB message with a warm DNS cache — the
// per-message cost of the checks, without SMTP.
func BenchmarkInspectWarmCache(b *testing.B) {
	d := testenv.StartDNS(b)
	d.LoadZoneFile(b, testenv.RepoRoot(b)+"/testdata/zones/gateway.test.zone", "")
	res, err := resolver.New(resolver.Config{Servers: []string{d.Addr()}, Timeout: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	opts := filter.Options{Hostname: "mx.test", Resolver: res,
		Checks: filter.Checks{SPF: true, DKIM: true, DMARC: true, FCrDNS: true, Timeout: 5 * time.Second, MaxDKIMSignatures: 5}}
	for _, k := range []string{"rsa2048.pem", "ed25519.pem"} {
		b.Run(k, func(b *testing.B) {
			key := testenv.DKIMKey(b, k)
			sel := "bench-" + strings.TrimSuffix(k, ".pem")
			d.AddRR(b, testenv.DKIMRecord(b, "example.org", sel, key))
			raw := cleanMessage(4 << 10)
			signed := testenv.DKIMSign(b, raw, "example.org", sel, key)
			in := filter.InspectInput{IP: netip.MustParseAddr("127.0.0.1"), Helo: "client.example.org", MailFrom: "alice@example.org", Rcpts: []string{"bob@corp.test"}}
			ctx := context.Background()
			t, err := filter.Inspect(ctx, opts, in, bytes.NewReader(signed))
			if err != nil || t.Auth.DMARC == nil || t.Auth.DMARC.Result != "pass" || len(t.Auth.DKIM) != 1 || t.Auth.DKIM[0].Result != "pass" {
				b.Fatalf("warm-up: %+v %v", t, err)
			}
			b.ReportAllocs()
			b.SetBytes(int64(len(signed)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := filter.Inspect(ctx, opts, in, bytes.NewReader(signed)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
