package auth

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/resolver"
)

// dkimTestdata is the repository's testdata directory.
func dkimTestdata(parts ...string) string {
	return filepath.Join(append([]string{"..", "testdata"}, parts...)...)
}

// dkimTestDNS starts an authoritative server with the zone lines and returns it
// and a caching resolver pointed at it (short timeout, one attempt, so that
// timeout tests stay fast).
func dkimTestDNS(tb testing.TB, rrs ...string) (*testenv.DNS, *resolver.Resolver) {
	tb.Helper()
	d := testenv.StartDNS(tb)
	if len(rrs) > 0 {
		d.AddRR(tb, rrs...)
	}
	r, err := resolver.New(resolver.Config{Servers: []string{d.Addr()}, Timeout: 300 * time.Millisecond, Attempts: 1})
	if err != nil {
		tb.Fatal(err)
	}
	return d, r
}

func dkimReadFile(tb testing.TB, parts ...string) []byte {
	tb.Helper()
	b, err := os.ReadFile(dkimTestdata(parts...))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// dkimLoadKey reads a test key from testdata/dkim/keys.
func dkimLoadKey(tb testing.TB, name string) crypto.Signer {
	tb.Helper()
	return testenv.DKIMKey(tb, name)
}

// dkimKeyRecord is the DNS record for a key: "v=DKIM1; k=...; p=...".
func dkimKeyRecord(tb testing.TB, key crypto.Signer) string {
	tb.Helper()
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			tb.Fatal(err)
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	}
	tb.Fatalf("unsupported key %T", key)
	return ""
}

// dkimTXT renders a TXT record for the test server, splitting the value into
// 255-octet strings (RFC 1035 3.3.14).
func dkimTXT(name, value string) string {
	var parts []string
	for len(value) > 255 {
		parts = append(parts, value[:255])
		value = value[255:]
	}
	parts = append(parts, value)
	return fmt.Sprintf("%s 300 IN TXT \"%s\"", name, strings.Join(parts, "\" \""))
}

// dkimSign signs msg with go-msgauth (rsa-sha256 or ed25519-sha256,
// relaxed/relaxed) and returns the signed message.
func dkimSign(tb testing.TB, msg []byte, domain, selector string, key crypto.Signer) []byte {
	tb.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{
		Domain: domain, Selector: selector, Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             []string{"From", "To", "Subject", "Date"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}

// dkimSignRaw is a minimal relaxed/relaxed DKIM signer for what go-msgauth
// refuses to produce: rsa-sha1 (algo "rsa-sha1") and l= (bodyLen >= 0). It
// signs From, To, Subject and Date.
func dkimSignRaw(tb testing.TB, msg []byte, domain, selector, algo string, key crypto.Signer, bodyLen int) []byte {
	tb.Helper()
	msg = bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	msg = bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))
	head, body, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	head = append(head, "\r\n"...)

	newHash := sha256.New
	hashID := crypto.SHA256
	if strings.HasSuffix(algo, "sha1") {
		newHash, hashID = sha1.New, crypto.SHA1
	}
	cbody := dkimRelaxedBody(body)
	if bodyLen >= 0 {
		cbody = cbody[:bodyLen]
	}
	bh := newHash()
	bh.Write(cbody)

	tags := fmt.Sprintf("v=1; a=%s; c=relaxed/relaxed; d=%s; s=%s; t=%d; h=from:to:subject:date;", algo, domain, selector, time.Now().Unix())
	if bodyLen >= 0 {
		tags += fmt.Sprintf(" l=%d;", bodyLen)
	}
	tags += " bh=" + base64.StdEncoding.EncodeToString(bh.Sum(nil)) + "; b="

	fields := dkimSplitFields(string(head))
	h := newHash()
	for _, name := range []string{"from", "to", "subject", "date"} {
		for i := len(fields) - 1; i >= 0; i-- { // bottom-up (RFC 6376 5.4.2)
			n, _, _ := strings.Cut(fields[i], ":")
			if strings.EqualFold(strings.TrimSpace(n), name) {
				h.Write([]byte(dkimRelaxedHeader(fields[i]) + "\r\n"))
				break
			}
		}
	}
	h.Write([]byte(dkimRelaxedHeader("DKIM-Signature: " + tags)))
	var sig []byte
	var err error
	if ek, ok := key.(ed25519.PrivateKey); ok {
		sig = ed25519.Sign(ek, h.Sum(nil))
	} else {
		sig, err = key.Sign(rand.Reader, h.Sum(nil), hashID)
		if err != nil {
			tb.Fatal(err)
		}
	}
	field := "DKIM-Signature: " + tags + base64.StdEncoding.EncodeToString(sig) + "\r\n"
	return append([]byte(field), msg...)
}

func dkimSplitFields(head string) []string {
	var fields []string
	for _, line := range strings.SplitAfter(head, "\r\n") {
		if line == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += line
		} else {
			fields = append(fields, line)
		}
	}
	for i := range fields {
		fields[i] = strings.TrimSuffix(fields[i], "\r\n")
	}
	return fields
}

var dkimWSP = regexp.MustCompile(`[ \t]+`)

// dkimRelaxedHeader is RFC 6376 3.4.2 (without the trailing CRLF).
func dkimRelaxedHeader(f string) string {
	name, value, _ := strings.Cut(f, ":")
	value = strings.ReplaceAll(value, "\r\n", "")
	value = dkimWSP.ReplaceAllString(value, " ")
	return strings.ToLower(strings.TrimSpace(name)) + ":" + strings.TrimSpace(value)
}

// dkimRelaxedBody is RFC 6376 3.4.4.
func dkimRelaxedBody(body []byte) []byte {
	lines := strings.Split(string(body), "\r\n")
	var out []string
	for _, l := range lines {
		l = dkimWSP.ReplaceAllString(l, " ")
		out = append(out, strings.TrimRight(l, " "))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	if len(out) == 0 {
		return nil
	}
	return []byte(strings.Join(out, "\r\n") + "\r\n")
}

// dkimTestMessage is a plain message to sign.
const dkimTestMessage = "From: Alice <alice@example.org>\r\n" +
	"To: Bob <bob@corp.example>\r\n" +
	"Subject: Q4 invoice\r\n" +
	"Date: Fri, 27 Nov 2026 10:00:00 +0000\r\n" +
	"Message-ID: <1@example.org>\r\n" +
	"\r\n" +
	"Hello Bob,\r\n" +
	"\r\n" +
	"the invoice is attached.\r\n"

// dkimSlowResolver is a resolver that would wait 5s per query: deadlines
// shorter than that must come from the caller.
func dkimSlowResolver(tb testing.TB, addr string) *resolver.Resolver {
	tb.Helper()
	r, err := resolver.New(resolver.Config{Servers: []string{addr}, Timeout: 5 * time.Second, Attempts: 1})
	if err != nil {
		tb.Fatal(err)
	}
	return r
}
