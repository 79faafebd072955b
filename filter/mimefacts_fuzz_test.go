package filter

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzMessageFacts feeds arbitrary messages to the MIME walk with panic
// recovery off, and checks the invariants the policy relies on.
func FuzzMessageFacts(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(mimeFixtures, "*.eml"))
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\n--b--\r\n"))
	f.Add([]byte("Content-Type: message/rfc822\r\n\r\nContent-Type: text/html\r\n\r\n<a href=http://x.example>"))
	lim := MIMELimits{MaxDepth: 5, MaxParts: 20, MaxURLScan: 4096, MaxURLDomains: 5}
	problems := []string{"", MIMEMalformed, MIMEDepthLimit, MIMEPartLimit}
	f.Fuzz(func(t *testing.T, msg []byte) {
		atts, urls, problem := messageFacts(bytes.NewReader(msg), lim, false)
		if atts == nil || urls.Domains == nil {
			t.Fatal("nil slice")
		}
		if !slices.Contains(problems, problem) {
			t.Fatalf("problem %q", problem)
		}
		if len(atts) > lim.MaxParts+1 {
			t.Fatalf("%d attachments", len(atts))
		}
		if len(urls.Domains) > lim.MaxURLDomains || !slices.IsSorted(urls.Domains) || urls.Count < len(urls.Domains) {
			t.Fatalf("urls %+v", urls)
		}
		for _, d := range urls.Domains {
			if d == "" || d != strings.ToLower(d) || !mimeASCIIOnly(d) {
				t.Fatalf("domain %q", d)
			}
		}
		var total int64
		for _, a := range atts {
			total += a.Size
			if _, err := hex.DecodeString(a.SHA256); err != nil || len(a.SHA256) != 64 {
				t.Fatalf("sha256 %q", a.SHA256)
			}
			if a.SniffedType == "" || a.ContentType == "" || a.ContentType != strings.ToLower(a.ContentType) {
				t.Fatalf("types %q %q", a.ContentType, a.SniffedType)
			}
			n := a.Filename
			if len(n) > mimeMaxFilenameBytes || !utf8.ValidString(n) || strings.ContainsAny(n, `/\`) ||
				strings.IndexFunc(n, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) >= 0 {
				t.Fatalf("filename %q", n)
			}
		}
		// Decoded content is never larger than the message (base64 and
		// quoted-printable only shrink; charsets are not applied to it).
		if total > int64(len(msg)) {
			t.Fatalf("attachments total %d bytes from a %d-byte message", total, len(msg))
		}
	})
}

func mimeASCIIOnly(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
