package filter

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// lineCase is one input to the DATA line validator and what it must report.
type lineCase struct {
	name     string
	in       string
	maxLine  int
	bareLF   bool
	bareCR   bool
	nul      bool
	long     bool // in reject mode (NUL counts as a character there)
	longNorm bool // in normalize mode (NUL is dropped before counting)
	normOut  string
}

var lineCases = []lineCase{
	{name: "empty", in: ""},
	{name: "clean", in: "From: a@example.org\r\n\r\nbody\r\n", normOut: "From: a@example.org\r\n\r\nbody\r\n"},
	{name: "clean 8-bit", in: "caf\xc3\xa9 \xff\r\n", normOut: "caf\xc3\xa9 \xff\r\n"},
	{name: "no final line break", in: "a\r\nb", normOut: "a\r\nb"},
	{name: "bare LF", in: "a\nb\r\n", bareLF: true, normOut: "a\r\nb\r\n"},
	{name: "bare LF first", in: "\nb", bareLF: true, normOut: "\r\nb"},
	{name: "bare CR", in: "a\rb\r\n", bareCR: true, normOut: "a\r\nb\r\n"},
	{name: "bare CR last", in: "a\r", bareCR: true, normOut: "a\r\n"},
	{name: "CR CR LF", in: "a\r\r\nb", bareCR: true, normOut: "a\r\n\r\nb"},
	{name: "LF CR", in: "a\n\rb", bareLF: true, bareCR: true, normOut: "a\r\n\r\nb"},
	{name: "NUL", in: "a\x00b\r\n", nul: true, normOut: "ab\r\n"},
	{name: "only NULs", in: "\x00\x00", nul: true, normOut: ""},
	{name: "NUL between CR and LF", in: "a\r\x00\n", bareCR: true, bareLF: true, nul: true, normOut: "a\r\n\r\n"},
	// The end-of-data look-alikes of SMTP smuggling (go-smtp passes them
	// through to us as content).
	{name: "LF dot LF", in: "x\n.\nMAIL FROM:<a@b>\r\n", bareLF: true, normOut: "x\r\n.\r\nMAIL FROM:<a@b>\r\n"},
	{name: "CRLF dot LF", in: "x\r\n.\nQUIT\r\n", bareLF: true, normOut: "x\r\n.\r\nQUIT\r\n"},
	{name: "CR dot CR", in: "x\r.\rQUIT\r\n", bareCR: true, normOut: "x\r\n.\r\nQUIT\r\n"},
	{name: "CR CRLF dot CR CRLF", in: "x\r\r\n.\r\r\nQUIT\r\n", bareCR: true, normOut: "x\r\n\r\n.\r\n\r\nQUIT\r\n"},
	{name: "line at the limit", in: "0123456789\r\n", maxLine: 10, normOut: "0123456789\r\n"},
	{name: "line over the limit", in: "01234567890\r\n", maxLine: 10, long: true, longNorm: true, normOut: "01234567890\r\n"},
	{name: "last line over the limit", in: "ok\r\n01234567890", maxLine: 10, long: true, longNorm: true, normOut: "ok\r\n01234567890"},
	{name: "bare CR ends a line", in: "0123456789\r0123456789\r\n", maxLine: 10, bareCR: true, normOut: "0123456789\r\n0123456789\r\n"},
	{name: "bare LF ends a line", in: "0123456789\n0123456789\r\n", maxLine: 10, bareLF: true, normOut: "0123456789\r\n0123456789\r\n"},
	{name: "NUL counted only when kept", in: "01234\x0056789\x00\r\n", maxLine: 10, nul: true, long: true, normOut: "0123456789\r\n"},
	{name: "no limit", in: strings.Repeat("x", 5000) + "\r\n", normOut: strings.Repeat("x", 5000) + "\r\n"},
}

// runValidator writes in through a validator in the given chunks and closes it.
func runValidator(t *testing.T, in []byte, chunks []int, normalize bool, maxLine int) (*lineValidator, []byte) {
	t.Helper()
	var out bytes.Buffer
	v := newLineValidator(&out, normalize, maxLine)
	rest := in
	for _, n := range chunks {
		n = min(n, len(rest))
		if k, err := v.Write(rest[:n]); err != nil || k != n {
			t.Fatalf("Write = %d, %v; want %d, nil", k, err, n)
		}
		rest = rest[n:]
	}
	if len(rest) > 0 {
		if _, err := v.Write(rest); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	return v, out.Bytes()
}

// chunkings are the ways each case is written: whole, byte by byte, and
// split in two at every position (a CRLF split across two network reads
// must not look like a bare CR followed by a bare LF).
func chunkings(n int) [][]int {
	c := [][]int{nil, slices.Repeat([]int{1}, n)}
	if n <= 64 {
		for i := 1; i < n; i++ {
			c = append(c, []int{i})
		}
	}
	return c
}

func TestLineValidator(t *testing.T) {
	for _, tc := range lineCases {
		for _, normalize := range []bool{false, true} {
			mode := "reject"
			if normalize {
				mode = "normalize"
			}
			t.Run(tc.name+"/"+mode, func(t *testing.T) {
				for _, ch := range chunkings(len(tc.in)) {
					v, out := runValidator(t, []byte(tc.in), ch, normalize, tc.maxLine)
					if v.BareLF != tc.bareLF || v.BareCR != tc.bareCR || v.NUL != tc.nul {
						t.Fatalf("chunks %v: BareLF=%v BareCR=%v NUL=%v, want %v %v %v",
							ch, v.BareLF, v.BareCR, v.NUL, tc.bareLF, tc.bareCR, tc.nul)
					}
					if v.Dirty() != (tc.bareLF || tc.bareCR || tc.nul) {
						t.Fatalf("Dirty() = %v", v.Dirty())
					}
					wantLong := tc.long
					if normalize {
						wantLong = tc.longNorm
					}
					if v.LongLine != wantLong {
						t.Fatalf("chunks %v: LongLine=%v, want %v", ch, v.LongLine, wantLong)
					}
					want := tc.normOut
					if !normalize {
						// Refusing mode passes bytes through: a message
						// with anything to change is refused anyway.
						want = tc.in
					}
					if string(out) != want {
						t.Fatalf("chunks %v: output %q, want %q", ch, out, want)
					}
				}
			})
		}
	}
}

type failingWriter struct{ after int }

var errSink = errors.New("sink failed")

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.after <= 0 {
		return 0, errSink
	}
	w.after--
	return len(p), nil
}

func TestLineValidatorWriterErrors(t *testing.T) {
	v := newLineValidator(&failingWriter{}, false, 0)
	if _, err := v.Write([]byte("abc\r\n")); !errors.Is(err, errSink) {
		t.Errorf("Write error %v, want the sink's", err)
	}
	// A trailing CR is held back until Close, which must report the failure.
	v = newLineValidator(&failingWriter{after: 1}, true, 0)
	if _, err := v.Write([]byte("abc\r")); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(); !errors.Is(err, errSink) {
		t.Errorf("Close error %v, want the sink's", err)
	}
	// Nothing pending: Close writes nothing and succeeds.
	v = newLineValidator(&failingWriter{}, true, 0)
	if err := v.Close(); err != nil {
		t.Errorf("Close with nothing pending: %v", err)
	}
}
