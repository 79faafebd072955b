package filter_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/auth"
	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/resolver"
)

// TestDKIMSignedMailAuthenticated: a message DKIM-signed by the From domain
// passes DKIM and DMARC through the gateway even when SPF fails (it came
// from an address the domain's SPF does not list), and the signature still
// verifies after relaying: our header edits leave signed headers intact.
func TestDKIMSignedMailAuthenticated(t *testing.T) {
	g := startPolicyGW(t, true)
	for _, k := range []string{"rsa2048.pem", "ed25519.pem"} {
		key := testenv.DKIMKey(t, k)
		sel := strings.TrimSuffix(k, ".pem")
		g.dns.AddRR(t, testenv.DKIMRecord(t, "bank.example", sel, key))
		signed := testenv.DKIMSign(t, []byte(msg("ceo@bank.example", "bob@corp.test", "signed "+k, "genuine\r\n")), "bank.example", sel, key)
		code, text := g.sendMail("ceo@bank.example", []string{"bob@corp.test"}, string(signed))
		if code != 250 {
			t.Fatalf("%s: got %d %q, want 250 (DKIM-aligned pass)", k, code, text)
		}
	}
	msgs := g.down.WaitMessages(t, 2, 5*time.Second)
	res, err := resolver.New(resolver.Config{Servers: []string{g.dns.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		data := string(m.Data)
		// The mailbox server can verify the signature again.
		again, err := auth.VerifyDKIM(ctxT(t), res, strings.NewReader(data), auth.DKIMOptions{})
		if err != nil || len(again) != 1 || again[0].Result != "pass" {
			t.Errorf("relayed message no longer verifies: %+v %v", again, err)
		}
		for _, want := range []string{"dkim=pass", "header.d=bank.example", "dmarc=pass", "spf=fail"} {
			if !strings.Contains(data, want) {
				t.Errorf("Authentication-Results lacks %q:\n%s", want, data)
			}
		}
	}
}
