package main

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mxguard/mxguard/auth"
	"github.com/mxguard/mxguard/internal/testenv"
)

const checkTestMessage = "From: Alice <alice@example.org>\r\n" +
	"To: bob@corp.example\r\n" +
	"Subject: hello\r\n" +
	"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n" +
	"\r\n" +
	"Hello Bob.\r\n"

// checkTestEnv serves SPF, DKIM and DMARC records for example.org and writes
// signed, tampered and multi-From messages; it returns the DNS address and
// the message paths.
func checkTestEnv(t *testing.T) (dnsAddr string, files map[string]string) {
	t.Helper()
	blk, _ := pem.Decode(mustRead(t, filepath.Join("..", "..", "testdata", "dkim", "keys", "ed25519.pem")))
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key := k.(crypto.Signer)
	pub := base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey))

	d := testenv.StartDNS(t)
	d.AddRR(t,
		`example.org. 300 IN TXT "v=spf1 ip4:192.0.2.0/24 -all"`,
		`example.org. 300 IN A 192.0.2.1`,
		`ed._domainkey.example.org. 300 IN TXT "v=DKIM1; k=ed25519; p=`+pub+`"`,
		`_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject"`,
	)
	var signed bytes.Buffer
	if err := dkim.Sign(&signed, strings.NewReader(checkTestMessage), &dkim.SignOptions{
		Domain: "example.org", Selector: "ed", Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
	}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files = map[string]string{
		"signed":   signed.String(),
		"tampered": strings.Replace(signed.String(), "Hello Bob.", "Hello Bob, pay now.", 1),
		"unsigned": checkTestMessage,
		"twofrom":  "From: a@example.org\r\n" + signed.String(),
	}
	for name, body := range files {
		p := filepath.Join(dir, name+".eml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		files[name] = p
	}
	return d.Addr(), files
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkRun(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runCheck(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestCheckJSON(t *testing.T) {
	dns, f := checkTestEnv(t)
	good := []string{"--ip", "192.0.2.10", "--helo", "mail.example.org", "--mail-from", "alice@example.org", "--dns", dns, "--json"}
	bad := []string{"--ip", "203.0.113.5", "--helo", "evil.example", "--mail-from", "alice@example.org", "--dns", dns, "--json"}
	tests := []struct {
		name string
		args []string
		want map[string]string // JSON path (dot-separated) → value
	}{
		{"spf pass", append([]string{"spf"}, good...), map[string]string{"result": "pass", "domain": "example.org", "identity": "mailfrom"}},
		{"spf fail", append([]string{"spf"}, bad...), map[string]string{"result": "fail"}},
		{"spf null path", []string{"spf", "--ip", "192.0.2.10", "--helo", "example.org", "--dns", dns, "--json"}, map[string]string{"result": "pass", "identity": "helo"}},
		{"dkim pass", []string{"dkim", "--dns", dns, "--json", f["signed"]}, map[string]string{"result": "pass", "signatures.0.domain": "example.org", "signatures.0.selector": "ed"}},
		{"dkim file first", []string{"dkim", f["tampered"], "--json", "--dns", dns}, map[string]string{"result": "fail", "signatures.0.reason": "body hash did not verify"}},
		{"dkim none", []string{"dkim", "--dns", dns, "--json", f["unsigned"]}, map[string]string{"result": "none"}},
		{"dmarc pass by dkim", append(append([]string{"dmarc"}, bad...), f["signed"]), map[string]string{"result": "pass", "policy": "reject", "dkim_aligned": "true", "spf.result": "fail", "dkim.0.aligned": "true"}},
		{"dmarc pass by spf", append(append([]string{"dmarc"}, good...), f["tampered"]), map[string]string{"result": "pass", "spf_aligned": "true", "dkim_aligned": "false"}},
		{"dmarc fail", append(append([]string{"dmarc"}, bad...), f["tampered"]), map[string]string{"result": "fail", "policy": "reject", "policy_domain": "example.org"}},
		{"dmarc two From", append(append([]string{"dmarc"}, good...), f["twofrom"]), map[string]string{"result": "permerror"}},
		{"message", append(append([]string{"message", "--hostname", "mx1.corp.example"}, bad...), f["signed"]),
			map[string]string{"spf.result": "fail", "dkim.result": "pass", "dkim.signatures.0.result": "pass", "dmarc.result": "pass", "from": "alice@example.org"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := checkRun(tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errOut)
			}
			var v any
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("not one JSON object: %v\n%s", err, out)
			}
			for path, want := range tc.want {
				if got := checkJSONPath(v, path); got != want {
					t.Errorf("%s = %q, want %q\n%s", path, got, want, out)
				}
			}
		})
	}
}

// checkJSONPath walks a decoded JSON value by dot-separated keys and indexes.
func checkJSONPath(v any, path string) string {
	for _, p := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i := 0
			for _, c := range p {
				i = i*10 + int(c-'0')
			}
			if i >= len(x) {
				return "<missing>"
			}
			v = x[i]
		default:
			return "<missing>"
		}
	}
	b, _ := json.Marshal(v)
	return strings.Trim(string(b), `"`)
}

func TestCheckMessageAuthResults(t *testing.T) {
	dns, f := checkTestEnv(t)
	args := []string{"message", "--ip", "192.0.2.10", "--helo", "mail.example.org", "--mail-from", "alice@example.org", "--dns", dns, "--hostname", "mx1.corp.example"}
	code, out, errOut := checkRun(append(append([]string{}, args...), "--json", f["signed"])...)
	if code != 0 {
		t.Fatal(errOut)
	}
	var v struct {
		AR string `json:"authentication_results"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatal(err)
	}
	if !auth.AuthResClaims(v.AR, "mx1.corp.example") {
		t.Fatalf("A-R does not carry our authserv-id: %q", v.AR)
	}
	for _, want := range []string{"spf=pass", "dkim=pass", "header.d=example.org", "header.s=ed", "dmarc=pass", "header.from=example.org", "polrec.p=reject"} {
		if !strings.Contains(v.AR, want) {
			t.Errorf("A-R lacks %q: %q", want, v.AR)
		}
	}

	// Human output: every method and the header line.
	code, out, errOut = checkRun(append(append([]string{}, args...), f["signed"])...)
	if code != 0 {
		t.Fatal(errOut)
	}
	for _, want := range []string{"spf: pass", "dkim: pass", "dmarc: pass", "policy:      reject (record at _dmarc.example.org)", "\nAuthentication-Results: mx1.corp.example;\n\tspf=pass"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\r") {
		t.Error("CR in terminal output")
	}
}

func TestCheckHuman(t *testing.T) {
	dns, f := checkTestEnv(t)
	code, out, _ := checkRun("spf", "--ip", "203.0.113.5", "--mail-from", "alice@example.org", "--dns", dns)
	if code != 0 || !strings.HasPrefix(out, "spf: fail\n") || !strings.Contains(out, "domain:      example.org") {
		t.Errorf("spf: %d\n%s", code, out)
	}
	code, out, _ = checkRun("dkim", "--dns", dns, f["tampered"])
	if code != 0 || !strings.HasPrefix(out, "dkim: fail\n") || !strings.Contains(out, "reason: body hash did not verify") {
		t.Errorf("dkim: %d\n%s", code, out)
	}
	code, out, _ = checkRun("dmarc", "--ip", "203.0.113.5", "--mail-from", "alice@example.org", "--dns", dns, f["tampered"])
	if code != 0 || !strings.HasPrefix(out, "dmarc: fail\n") || !strings.Contains(out, "aligned:     spf no, dkim no") {
		t.Errorf("dmarc: %d\n%s", code, out)
	}
}

func TestCheckUsage(t *testing.T) {
	dns, f := checkTestEnv(t)
	tests := []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"--help"}, 0},
		{[]string{"arc"}, 2},
		{[]string{"dkim", "--dns", dns}, 2}, // no file
		{[]string{"dkim", "--dns", dns, f["signed"], f["signed"]}, 2}, // two files
		{[]string{"spf", "--ip", "nope", "--mail-from", "a@b.example"}, 2},
		{[]string{"spf", "--ip", "192.0.2.1"}, 2}, // neither mail-from nor helo
		{[]string{"spf", "--ip", "192.0.2.1", "--mail-from", "a@b.example", "extra"}, 2},
		{[]string{"spf", "--bogus"}, 2},
		{[]string{"dkim", "--dns", dns, filepath.Join(t.TempDir(), "missing.eml")}, 1},
		{[]string{"dkim", "--dns", "not a server:xx:yy", f["signed"]}, 2},
		{[]string{"dkim", "--dns", "127.0.0.1", f["signed"]}, 2}, // no port
	}
	for _, tc := range tests {
		if code, _, errOut := checkRun(tc.args...); code != tc.code {
			t.Errorf("%q: exit %d, want %d (%s)", tc.args, code, tc.code, errOut)
		}
	}
}

func TestCheckHeaderValues(t *testing.T) {
	msg := []byte("from: a@example.org\r\nTo: x\r\nFROM: B\r\n <b@example.org>\r\n\r\nFrom: body@example.org\r\n")
	got := checkHeaderValues(msg, "From")
	if len(got) != 2 || got[0] != "a@example.org" || got[1] != "B <b@example.org>" {
		t.Fatalf("%q", got)
	}
}
