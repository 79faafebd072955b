package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testCert is the process-wide test PKI: generating ECDSA keys is cheap but
// not free, and one CA per process lets every server and client in a test
// binary trust each other.
type testCert struct {
	leaf    tls.Certificate
	roots   *x509.CertPool
	caPEM   []byte
	certPEM []byte // leaf then CA
	keyPEM  []byte
}

var (
	testCertOnce sync.Once
	testCertVal  *testCert
	testCertErr  error
)

// TestCertNames are the names the test leaf certificate is valid for.
var TestCertNames = []string{"localhost", "mx.test"}

// TestCertIPs are the addresses the test leaf certificate is valid for.
var TestCertIPs = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}

// TestCert returns a server TLS config holding a leaf certificate for
// 127.0.0.1, ::1, localhost and mx.test, and a pool holding only the
// self-signed CA that issued it. Both are generated once per process (ECDSA
// P-256) and cached; the returned config is a fresh clone the caller may
// change.
func TestCert(tb testing.TB) (server *tls.Config, roots *x509.CertPool) {
	tb.Helper()
	c := loadTestCert(tb)
	return &tls.Config{
		Certificates: []tls.Certificate{c.leaf},
		MinVersion:   tls.VersionTLS12,
	}, c.roots.Clone()
}

// TestCertFiles writes the test leaf certificate (with its CA appended) and
// its key as PEM files into a temporary directory and returns their paths,
// for configs that name files (tls: {cert, key}). caFile holds the CA alone.
func TestCertFiles(tb testing.TB) (certFile, keyFile, caFile string) {
	tb.Helper()
	c := loadTestCert(tb)
	dir := tb.TempDir()
	certFile = filepath.Join(dir, "cert.pem")
	keyFile = filepath.Join(dir, "key.pem")
	caFile = filepath.Join(dir, "ca.pem")
	for _, f := range []struct {
		path string
		data []byte
	}{{certFile, c.certPEM}, {keyFile, c.keyPEM}, {caFile, c.caPEM}} {
		if err := os.WriteFile(f.path, f.data, 0o600); err != nil {
			tb.Fatalf("write %s: %v", f.path, err)
		}
	}
	return certFile, keyFile, caFile
}

func loadTestCert(tb testing.TB) *testCert {
	tb.Helper()
	testCertOnce.Do(func() { testCertVal, testCertErr = generateTestCert() })
	if testCertErr != nil {
		tb.Fatalf("test certificate: %v", testCertErr)
	}
	return testCertVal
}

func generateTestCert() (*testCert, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mxguard test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}

	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "mx.test"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     TestCertNames,
		IPAddresses:  TestCertIPs,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("leaf: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(leafKey)
	if err != nil {
		return nil, err
	}

	c := &testCert{roots: x509.NewCertPool()}
	c.roots.AddCert(caCert)
	c.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	c.certPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), c.caPEM...)
	c.keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	c.leaf, err = tls.X509KeyPair(c.certPEM, c.keyPEM)
	if err != nil {
		return nil, err
	}
	return c, nil
}
