package testenv

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIMKey loads a test private key (PKCS#8 PEM) from testdata/dkim/keys,
// e.g. "rsa2048.pem" or "ed25519.pem".
func DKIMKey(tb testing.TB, name string) crypto.Signer {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(tb), "testdata", "dkim", "keys", name))
	if err != nil {
		tb.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		tb.Fatalf("%s: no PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}
	return k.(crypto.Signer)
}

// DKIMRecord returns the zone-file line publishing key at
// selector._domainkey.domain, split into 255-octet strings.
func DKIMRecord(tb testing.TB, domain, selector string, key crypto.Signer) string {
	tb.Helper()
	var v string
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			tb.Fatal(err)
		}
		v = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
	case ed25519.PublicKey:
		v = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	default:
		tb.Fatalf("unsupported key %T", key)
	}
	var parts []string
	for len(v) > 255 {
		parts = append(parts, v[:255])
		v = v[255:]
	}
	parts = append(parts, v)
	return fmt.Sprintf("%s._domainkey.%s. 300 IN TXT \"%s\"", selector, strings.TrimSuffix(domain, "."), strings.Join(parts, "\" \""))
}

// DKIMSign signs msg (relaxed/relaxed; From, To, Subject, Date, Message-ID).
func DKIMSign(tb testing.TB, msg []byte, domain, selector string, key crypto.Signer) []byte {
	tb.Helper()
	var out bytes.Buffer
	err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{
		Domain: domain, Selector: selector, Signer: key,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             []string{"From", "To", "Subject", "Date", "Message-ID"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return out.Bytes()
}
