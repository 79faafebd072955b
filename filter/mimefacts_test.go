package filter

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The golden files are rewritten with `go test ./filter/ -run MIME -update`.
// The flag may also be defined by another test file of this package.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files")
	}
}

func updateGolden() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

const mimeFixtures = "../testdata/messages"

type mimeGolden struct {
	Attachments []Attachment `json:"attachments"`
	URLs        URLFacts     `json:"urls"`
	Problem     string       `json:"problem"`
}

// TestMIMEFactsGolden runs every testdata/messages/mime-*.eml fixture with the
// default limits against its .facts.json golden file.
func TestMIMEFactsGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(mimeFixtures, "mime-*.eml"))
	if err != nil || len(files) < 15 {
		t.Fatalf("fixtures: %v (%d files)", err, len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".eml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			atts, urls, problem := MessageFacts(bytes.NewReader(raw), MIMELimits{})
			got, err := json.MarshalIndent(mimeGolden{atts, urls, problem}, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := strings.TrimSuffix(file, ".eml") + ".facts.json"
			if updateGolden() {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("facts differ from %s (run with -update after checking)\ngot:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
}

// Properties the golden files must show; this keeps a careless -update from
// blessing a regression in what matters to the policy.
func TestMIMEFactsFixtureExpectations(t *testing.T) {
	type att struct{ name, declared, sniffed string }
	tests := []struct {
		file    string
		atts    []att
		urls    int
		domains []string
		problem string
	}{
		{file: "plain", urls: 3, domains: []string{"reports.example.com", "www.example.net"}},
		{file: "mixed-pdf", atts: []att{{"invoice.pdf", "application/pdf", "application/pdf"}}},
		{file: "nested-alternative", urls: 2, domains: []string{"www.example.com"},
			atts: []att{{"", "image/png", "image/png"}}},
		{file: "exe-octet-stream", atts: []att{{"update.exe", "application/octet-stream", "application/x-msdownload"}}},
		{file: "office-macro", atts: []att{
			{"invoice.docm", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/vnd.ms-word.document.macroenabled.12"},
			{"notes.docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
			{"old.doc", "application/msword", "application/x-ole-storage"},
		}},
		{file: "iso", atts: []att{{"scan.img", "application/x-iso9660-image", "application/x-iso9660-image"}}},
		{file: "zip", atts: []att{
			{"files.zip", "application/zip", "application/zip"},
			{"tool.jar", "application/octet-stream", "application/java-archive"},
			{"logs.gz", "application/x-gzip", "application/gzip"},
			{"a.7z", "application/x-7z-compressed", "application/x-7z-compressed"},
			{"a.rar", "application/x-rar", "application/x-rar-compressed"},
		}},
		// The .js is not text/*, the .vbs has a name; the plain part is
		// neither. Text attachments are scanned for URLs like any text part
		// (the .vbs), other types are not (the .js).
		{file: "script", urls: 1, domains: []string{"payload.example"}, atts: []att{
			{"invoice.js", "application/javascript", "text/plain"},
			{"setup.vbs", "text/plain", "text/plain"},
		}},
		{file: "rfc2231", atts: []att{
			{"résumé final.pdf", "application/pdf", "application/pdf"},
			{"naïve long name.exe", "application/octet-stream", "application/x-msdownload"},
			{"€uro.zip", "application/octet-stream", "application/zip"},
		}},
		{file: "rfc2047", atts: []att{
			{"счет.pdf", "application/pdf", "application/pdf"},
			{"учнтт.exe", "application/octet-stream", "application/x-msdownload"},
			{"café menu.zip", "application/octet-stream", "text/plain"},
		}},
		{file: "filename-tricks", atts: []att{
			{"evil.exe", "application/octet-stream", "application/x-msdownload"},
			{"job.sh", "application/octet-stream", "text/plain"},
			{"invoicefdp.exe", "application/octet-stream", "application/x-msdownload"},
			{"belltabnul.scr", "application/octet-stream", "application/x-msdownload"},
			{"report.pdf.exe", "application/octet-stream", "application/x-msdownload"},
			{"my unquoted file.bat", "application/octet-stream", "text/plain"},
			{strings.Repeat("a", 188) + "…" + strings.Repeat("a", 56) + ".pdf.exe", "application/octet-stream", "application/x-msdownload"},
			{"payload.hta", "application/octet-stream", "text/plain"},
		}},
		{file: "encodings", urls: 2, domains: []string{"encoded.example.com", "latin1.example.org"},
			atts: []att{{"data.bin", "application/octet-stream", "application/octet-stream"}}},
		{file: "bad-base64", problem: MIMEMalformed, urls: 1, domains: []string{"after.example.com"},
			atts: []att{{"broken.pdf", "application/pdf", "application/pdf"}}},
		{file: "truncated", problem: MIMEMalformed, urls: 1, domains: []string{"truncated.example.com"},
			atts: []att{{"cut.pdf", "application/pdf", "application/pdf"}}},
		{file: "no-boundary", problem: MIMEMalformed},
		{file: "deep", problem: MIMEDepthLimit},
		{file: "html-links", urls: 11, domains: []string{
			"192.0.2.7", "2001:db8::1", "cdn.example.com", "login.example.net", "phish.example.net",
			"www.bare.example.org", "www.example.com", "xn--bcher-kva.example"}},
		{file: "forwarded", urls: 1, domains: []string{"inner.example.net"},
			atts: []att{{"inner.exe", "application/x-msdownload", "application/x-msdownload"}}},
		{file: "single-part-attachment", atts: []att{{"payload.bin", "application/octet-stream", "application/x-msdownload"}}},
		// The first of two different filenames, and the first Content-Type.
		{file: "conflicting-headers", problem: MIMEMalformed, atts: []att{
			{"a.pdf", "application/octet-stream", "application/x-msdownload"},
		}},
	}
	for _, tc := range tests {
		atts, urls, problem := mimeFixture(t, tc.file, MIMELimits{})
		var got []att
		for _, a := range atts {
			got = append(got, att{a.Filename, a.ContentType, a.SniffedType})
			if len(a.SHA256) != 64 {
				t.Errorf("%s: %q: sha256 %q", tc.file, a.Filename, a.SHA256)
			}
		}
		if !slices.Equal(got, tc.atts) {
			t.Errorf("%s: attachments\n got %q\nwant %q", tc.file, got, tc.atts)
		}
		if tc.domains == nil {
			tc.domains = []string{}
		}
		if urls.Count != tc.urls || !slices.Equal(urls.Domains, tc.domains) {
			t.Errorf("%s: urls %d %q; want %d %q", tc.file, urls.Count, urls.Domains, tc.urls, tc.domains)
		}
		if problem != tc.problem {
			t.Errorf("%s: problem %q; want %q", tc.file, problem, tc.problem)
		}
	}
}

func TestMIMEManyParts(t *testing.T) {
	atts, _, problem := mimeFixture(t, "many-parts", MIMELimits{})
	if problem != MIMEPartLimit || len(atts) != DefaultMIMEMaxParts {
		t.Fatalf("got %d attachments, problem %q; want %d, %q", len(atts), problem, DefaultMIMEMaxParts, MIMEPartLimit)
	}
	atts, _, problem = mimeFixture(t, "many-parts", MIMELimits{MaxParts: 300})
	if problem != "" || len(atts) != 300 {
		t.Fatalf("MaxParts 300: got %d attachments, problem %q", len(atts), problem)
	}
}

func TestMIMEDepthLimit(t *testing.T) {
	// deep.eml nests 15 multiparts around one attachment.
	for _, tc := range []struct {
		depth   int
		atts    int
		problem string
	}{
		{0, 0, MIMEDepthLimit}, // default 10
		{14, 0, MIMEDepthLimit},
		{15, 1, ""},
	} {
		atts, _, problem := mimeFixture(t, "deep", MIMELimits{MaxDepth: tc.depth})
		if len(atts) != tc.atts || problem != tc.problem {
			t.Errorf("MaxDepth %d: got %d attachments, problem %q; want %d, %q", tc.depth, len(atts), problem, tc.atts, tc.problem)
		}
	}
	// A forwarded message counts as one level, its multipart as another.
	if atts, _, problem := mimeFixture(t, "forwarded", MIMELimits{MaxDepth: 2}); len(atts) != 0 || problem != MIMEDepthLimit {
		t.Errorf("forwarded, MaxDepth 2: %d attachments, problem %q", len(atts), problem)
	}
	if atts, _, problem := mimeFixture(t, "forwarded", MIMELimits{MaxDepth: 3}); len(atts) != 1 || problem != "" {
		t.Errorf("forwarded, MaxDepth 3: %d attachments, problem %q", len(atts), problem)
	}
}

func TestMIMEURLLimits(t *testing.T) {
	_, urls, _ := mimeFixture(t, "html-links", MIMELimits{MaxURLDomains: 3})
	if urls.Count != 11 || len(urls.Domains) != 3 || !slices.IsSorted(urls.Domains) {
		t.Errorf("MaxURLDomains 3: %+v", urls)
	}
	// Only the first 40 bytes of text: one URL.
	_, urls, _ = mimeFixture(t, "plain", MIMELimits{MaxURLScan: 40})
	if urls.Count != 1 || !slices.Equal(urls.Domains, []string{"reports.example.com"}) {
		t.Errorf("MaxURLScan 40: %+v", urls)
	}
}

// The scanner reads in windows; URLs on and around window edges must be
// counted once each with their full host.
func TestMIMEURLWindowEdges(t *testing.T) {
	ref := regexp.MustCompile(`(?i)https?://([a-z0-9.-]+)`)
	for _, off := range []int{0, 1, urlChunk - 9, urlChunk - 8, urlChunk - 3, urlChunk, urlChunk + 1, urlChunk + urlKeep - 5, 2*urlChunk + 7} {
		for _, gap := range []int{1, 1500} {
			var b strings.Builder
			b.WriteString(strings.Repeat("x", off))
			for i := 0; b.Len() < 2*urlChunk+urlKeep+4096; i++ {
				fmt.Fprintf(&b, " https://h%d.example.com/p", i%40)
				b.WriteString(strings.Repeat(" ", gap))
			}
			text := b.String()
			want := ref.FindAllStringSubmatch(text, -1)
			msg := "Content-Type: text/plain\r\n\r\n" + text
			_, urls, problem := MessageFacts(strings.NewReader(msg), MIMELimits{MaxURLScan: 1 << 30, MaxURLDomains: 1000})
			if problem != "" || urls.Count != len(want) {
				t.Fatalf("off %d gap %d: count %d, problem %q; want %d", off, gap, urls.Count, problem, len(want))
			}
			hosts := map[string]bool{}
			for _, m := range want {
				hosts[strings.ToLower(m[1])] = true
			}
			if len(urls.Domains) != len(hosts) {
				t.Fatalf("off %d gap %d: domains %v; want %d distinct", off, gap, urls.Domains, len(hosts))
			}
			for _, d := range urls.Domains {
				if !hosts[d] {
					t.Fatalf("off %d gap %d: unexpected domain %q", off, gap, d)
				}
			}
		}
	}
}

func TestMIMEURLHosts(t *testing.T) {
	tests := []struct {
		text    string
		count   int
		domains []string
	}{
		{"http://", 0, nil},
		{"see http://a.example and https://b.example.", 2, []string{"a.example", "b.example"}},
		{"HTTP://UPPER.EXAMPLE/X", 1, []string{"upper.example"}},
		{"https://google.com.example@evil.example/x", 1, []string{"evil.example"}},
		{"https://host.example:443/", 1, []string{"host.example"}},
		{"http://[::1]:80/", 1, []string{"::1"}},
		{"https://straße.example/", 1, []string{"xn--strae-oqa.example"}},
		{"https://ÄÖÜ.example/", 1, []string{"xn--4ca0bs.example"}},
		{"https://a%2eb.example/", 1, nil},
		{"www.Bare.Example", 1, []string{"www.bare.example"}},
		{"https://www.x.example", 1, []string{"www.x.example"}},
		{"awww.x.example user@www.y.example path/www.z.example", 0, nil},
		{`<a href="https://q.example&quot;">`, 1, []string{"q.example"}},
		{"https://trailing.example./", 1, []string{"trailing.example"}},
		{`<a href="https:\\back.example\x">`, 1, []string{"back.example"}},
		{`http:/\mixed.example/`, 1, []string{"mixed.example"}},
		{"http:/one.example httpx://no.example", 0, nil},
		{"see www. and www.-x", 0, nil},
		{"https://" + strings.Repeat("u", urlMaxAuthority+10) + "@long.example/", 1, nil},
	}
	for _, tc := range tests {
		msg := "Content-Type: text/plain; charset=utf-8\r\n\r\n" + tc.text + "\r\n"
		_, urls, _ := MessageFacts(strings.NewReader(msg), MIMELimits{})
		if tc.domains == nil {
			tc.domains = []string{}
		}
		if urls.Count != tc.count || !slices.Equal(urls.Domains, tc.domains) {
			t.Errorf("%.60q: got %d %v; want %d %v", tc.text, urls.Count, urls.Domains, tc.count, tc.domains)
		}
	}
}

func TestMIMECleanFilename(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"report.pdf", "report.pdf"},
		{`C:\Users\x\evil.exe`, "evil.exe"},
		{"../../etc/passwd", "passwd"},
		{"C:evil.exe", "evil.exe"},
		{"a\x00b\x1bc\x7f.txt", "abc.txt"},
		{"invoice\u202efdp.exe", "invoicefdp.exe"},
		{"zero\u200bwidth.js", "zerowidth.js"},
		{"  spaced.exe . .", "spaced.exe"},
		{"..", ""},
		{"dir/", ""},
		{"\xff\xfe.exe", "\ufffd.exe"},
		{"=?UTF-8?B?0YHRh9C10YIucGRm?=", "счет.pdf"},
		{"=?koi8-r?B?897F1C5leGU=?=", "Счет.exe"},
		{"=?UTF-8?Q?a=2Fb.exe?=", "b.exe"},
	}
	for _, tc := range tests {
		if got := cleanFilename(tc.in); got != tc.want {
			t.Errorf("cleanFilename(%q) = %q; want %q", tc.in, got, tc.want)
		}
	}
	long := cleanFilename(strings.Repeat("é", 300) + ".exe")
	if len(long) > mimeMaxFilenameBytes || !strings.HasSuffix(long, ".exe") || !strings.Contains(long, "…") {
		t.Errorf("long name: %d bytes %q", len(long), long)
	}
}

func TestMIMEParseMediaType(t *testing.T) {
	tests := []struct {
		in       string
		mt, key  string
		val      string
		conflict bool
	}{
		{`application/pdf; name="a b.pdf"`, "application/pdf", "name", "a b.pdf", false},
		{`Attachment; filename=a b.pdf`, "attachment", "filename", "a b.pdf", false},
		{`attachment; filename="x;y.exe"; size=3`, "attachment", "filename", "x;y.exe", false},
		{`attachment; filename*=UTF-8''%E2%82%AC.txt`, "attachment", "filename", "€.txt", false},
		{`attachment; filename*=iso-8859-1'en'%E9t%E9.txt`, "attachment", "filename", "été.txt", false},
		{`attachment; filename*0*=utf-8''a%20; filename*1=b; filename*2*=%2Ec`, "attachment", "filename", "a b.c", false},
		{`attachment; filename="plain.txt"; filename*=UTF-8''ext.txt`, "attachment", "filename", "ext.txt", false},
		{`attachment; filename="a.pdf"; filename="a.exe"`, "attachment", "filename", "a.pdf", true},
		{`multipart/mixed; boundary="=_b;1"`, "multipart/mixed", "boundary", "=_b;1", false},
		{`multipart/mixed; boundary==_x_`, "multipart/mixed", "boundary", "=_x_", false},
		{`TEXT/HTML; CHARSET=UTF-8`, "text/html", "charset", "UTF-8", false},
	}
	for _, tc := range tests {
		mt, params, conflict := mimeParseMediaType(tc.in)
		if mt != tc.mt || params[tc.key] != tc.val || conflict != tc.conflict {
			t.Errorf("mimeParseMediaType(%q) = %q %q=%q conflict=%v; want %q %q conflict=%v",
				tc.in, mt, tc.key, params[tc.key], conflict, tc.mt, tc.val, tc.conflict)
		}
	}
}

func TestMIMESniff(t *testing.T) {
	isoImg := make([]byte, 0x9000)
	copy(isoImg[0x8001:], "CD001")
	udf := make([]byte, 0x9000)
	copy(udf[0x8001:], "BEA01")
	mzISO := bytes.Clone(isoImg)
	copy(mzISO, "MZ")
	tar := make([]byte, 600)
	copy(tar, "file.txt")
	copy(tar[257:], "ustar\x0000")
	tests := []struct {
		in   []byte
		want string
	}{
		{nil, "application/x-empty"},
		{[]byte("MZ\x90\x00"), "application/x-msdownload"},
		{[]byte("\x7fELF\x02\x01\x01"), "application/x-executable"},
		{[]byte("\xcf\xfa\xed\xfe\x07\x00\x00\x01"), "application/x-mach-binary"},
		{[]byte("\xca\xfe\xba\xbe\x00\x00\x00\x02"), "application/x-mach-binary"},
		{[]byte("\xca\xfe\xba\xbe\x00\x00\x00\x34"), "application/java-vm"},
		{[]byte("\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00"), "application/x-ole-storage"},
		{isoImg, "application/x-iso9660-image"},
		{udf, "application/x-udf-image"},
		{mzISO, "application/x-msdownload"},
		{[]byte("%PDF-1.7\n"), "application/pdf"},
		{append(bytes.Repeat([]byte{' '}, 100), "%PDF-1.4"...), "application/pdf"},
		{[]byte("\x1f\x8b\x08\x00"), "application/gzip"},
		{[]byte("7z\xbc\xaf\x27\x1c\x00\x04"), "application/x-7z-compressed"},
		{[]byte("Rar!\x1a\x07\x00"), "application/x-rar-compressed"},
		{[]byte("L\x00\x00\x00\x01\x14\x02\x00\x00"), "application/x-ms-shortcut"},
		{[]byte("{\\rtf1\\ansi"), "application/rtf"},
		{tar, "application/x-tar"},
		{[]byte("<html><body>x</body></html>"), "text/html"},
		{[]byte("hello world"), "text/plain"},
		{[]byte{0, 1, 2, 3, 0xff}, "application/octet-stream"},
	}
	for _, tc := range tests {
		s := newContentSink()
		// Odd write sizes exercise the offset bookkeeping.
		for rest := tc.in; len(rest) > 0; {
			n := min(len(rest), 777)
			s.Write(rest[:n])
			rest = rest[n:]
		}
		if got := s.sniff(); got != tc.want {
			t.Errorf("sniff(%.12q) = %q; want %q", tc.in, got, tc.want)
		}
	}
}

// Needles split across writes of every size are still found.
func TestMIMEZipNamesAcrossWrites(t *testing.T) {
	data := []byte("PK\x03\x04" + strings.Repeat("z", 100) + "[Content_Types].xml" + strings.Repeat("y", 50) +
		"xl/workbook.xml" + strings.Repeat("q", 3) + "xl/vbaProject.bin")
	for size := 1; size <= len(data); size++ {
		s := newContentSink()
		for rest := data; len(rest) > 0; {
			n := min(len(rest), size)
			s.Write(rest[:n])
			rest = rest[n:]
		}
		if got := s.sniff(); got != "application/vnd.ms-excel.sheet.macroenabled.12" {
			t.Fatalf("write size %d: %q", size, got)
		}
	}
}

// An attachment is hashed while it streams: a 16 MiB part must not cost
// memory in proportion to its size.
func TestMIMEStreamsLargeAttachment(t *testing.T) {
	const size = 8 << 20
	head := "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" +
		"Content-Type: application/octet-stream; name=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n"
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 64<<10)
		bw.WriteString(head)
		enc := base64.NewEncoder(base64.StdEncoding, &b64LineWriter{w: bw})
		chunk := bytes.Repeat([]byte{0xab}, 57*1024)
		for n := 0; n < size; n += len(chunk) {
			enc.Write(chunk[:min(len(chunk), size-n)])
		}
		enc.Close()
		bw.WriteString("\r\n--b--\r\n")
		bw.Flush()
		pw.Close()
	}()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	atts, _, problem := MessageFacts(pr, MIMELimits{})
	runtime.ReadMemStats(&after)
	if problem != "" || len(atts) != 1 || atts[0].Size != size {
		t.Fatalf("got %+v, problem %q", atts, problem)
	}
	// The test's writer allocates ~100 KiB; the walk a few buffers.
	t.Logf("allocated %d bytes", after.TotalAlloc-before.TotalAlloc)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("allocated %d bytes for a %d-byte attachment", alloc, size)
	}
}

var mimeCRLF = []byte("\r\n")

type b64LineWriter struct {
	w   io.Writer
	col int
}

// Write breaks base64 output into 76-character CRLF lines.
func (l *b64LineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), 76-l.col)
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
		p = p[k:]
		if l.col += k; l.col == 76 {
			l.w.Write(mimeCRLF)
			l.col = 0
		}
	}
	return n, nil
}

// Header blocks are parsed into many small allocations; a part header made
// of a huge number of tiny fields must hit the budget instead.
func TestMIMEHeaderBomb(t *testing.T) {
	for _, where := range []string{"root", "part"} {
		var b strings.Builder
		if where == "part" {
			b.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n")
		}
		for b.Len() < 2<<20 {
			b.WriteString("a:\r\n")
		}
		b.WriteString("Content-Type: application/octet-stream\r\n\r\nMZ\r\n--b--\r\n")
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		atts, _, problem := MessageFacts(strings.NewReader(b.String()), MIMELimits{})
		runtime.ReadMemStats(&after)
		if problem != MIMEMalformed || len(atts) != 0 {
			t.Errorf("%s: %d attachments, problem %q", where, len(atts), problem)
		}
		t.Logf("%s: allocated %d bytes", where, after.TotalAlloc-before.TotalAlloc)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
			t.Errorf("%s: allocated %d bytes for a 2 MiB header", where, alloc)
		}
	}
}

func TestMIMEMalformedInputs(t *testing.T) {
	tests := []struct {
		name, msg string
		atts      int
		problem   string
	}{
		{"empty", "", 0, ""},
		{"header only", "Subject: x\r\n", 0, ""},
		{"no final newline", "Subject: x", 0, ""},
		{"broken header line then type", "Subject: x\r\nnot a header\r\nContent-Type: application/zip\r\n\r\nPK\x03\x04", 1, MIMEMalformed},
		{"unknown transfer encoding", "Content-Type: application/pdf\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a\r\n", 1, MIMEMalformed},
		{"boundary never seen", "Content-Type: multipart/mixed; boundary=zz\r\n\r\nno parts here\r\n", 0, MIMEMalformed},
		{"only close delimiter", "Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz--\r\n", 0, ""},
		{"overlong boundary", "Content-Type: multipart/mixed; boundary=" + strings.Repeat("b", 300) + "\r\n\r\n", 0, MIMEMalformed},
		{"LF only", "Content-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: image/gif\n\nGIF89a\n--b--\n", 1, ""},
		{"bad rfc822", "Content-Type: message/rfc822\r\n\r\n\x00\x01 binary\r\n", 0, MIMEMalformed},
		{"digest default type", "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.1\r\n--d--\r\n", 1, ""},
	}
	for _, tc := range tests {
		atts, urls, problem := MessageFacts(strings.NewReader(tc.msg), MIMELimits{})
		if len(atts) != tc.atts || problem != tc.problem {
			t.Errorf("%s: %d attachments %+v, problem %q; want %d, %q", tc.name, len(atts), atts, problem, tc.atts, tc.problem)
		}
		if atts == nil || urls.Domains == nil {
			t.Errorf("%s: nil slice in result", tc.name)
		}
	}
}

func mimeFixture(t *testing.T, name string, lim MIMELimits) ([]Attachment, URLFacts, string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(mimeFixtures, "mime-"+name+".eml"))
	if err != nil {
		t.Fatal(err)
	}
	return MessageFacts(bytes.NewReader(raw), lim)
}

// BenchmarkMessageFacts: a 64 KiB multipart/mixed message, a text part with
// links and a base64 PDF.
func BenchmarkMessageFacts(b *testing.B) {
	msg := benchMessage(64 << 10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		atts, _, problem := MessageFacts(bytes.NewReader(msg), MIMELimits{})
		if len(atts) != 1 || problem != "" {
			b.Fatalf("%+v %q", atts, problem)
		}
	}
}

func benchMessage(size int) []byte {
	var m bytes.Buffer
	m.WriteString("From: a@example.org\r\nTo: b@corp.example\r\nSubject: bench\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"bench\"\r\n\r\n--bench\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	for i := 0; i < 20; i++ {
		fmt.Fprintf(&m, "Line %d of the note, see https://docs%d.example.com/page?id=%d for more.\r\n", i, i%5, i)
	}
	m.WriteString("--bench\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\n" +
		"Content-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	pdf := []byte("%PDF-1.4\n")
	for i := 0; len(pdf) < (size-m.Len()-64)*3/4; i++ {
		pdf = fmt.Appendf(pdf, "%d 0 obj << /Length 44 >> stream BT /F1 12 Tf 72 712 Td (x) Tj ET endstream endobj\n", i)
	}
	enc := base64.StdEncoding.EncodeToString(pdf)
	for len(enc) > 76 {
		m.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	m.WriteString(enc + "\r\n--bench--\r\n")
	return m.Bytes()
}
