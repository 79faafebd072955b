package filter

// Message-content facts for the policy: attachments and links, read from the
// MIME tree of the message at the end of DATA. Everything here treats the
// message as hostile: every size, count and depth is bounded, nothing is held
// in memory beyond a few small buffers, and a broken message gives what could
// be read plus a problem code instead of an error.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"math"
	"mime"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/textproto"
	"golang.org/x/net/idna"
)

// MIME problem codes reported by MessageFacts (Message.MIMEProblem).
const (
	// MIMEMalformed: the structure or an encoding could not be read as
	// declared (bad header, missing boundary, truncated part, bad base64,
	// unknown transfer encoding, conflicting Content-* fields or parameters).
	MIMEMalformed = "malformed"
	// MIMEDepthLimit: containers (multipart/*, message/rfc822) nested deeper
	// than MIMELimits.MaxDepth; the content below the limit was not read.
	MIMEDepthLimit = "depth_limit"
	// MIMEPartLimit: more than MIMELimits.MaxParts body parts; the walk
	// stopped at the limit.
	MIMEPartLimit = "part_limit"
)

// MIMELimits bounds the work MessageFacts does on one message. A zero or
// negative field takes its default.
type MIMELimits struct {
	// MaxDepth is the deepest nesting of containers (multipart/*,
	// message/rfc822) walked; default 10.
	MaxDepth int
	// MaxParts is the number of body parts walked, containers included;
	// default 200.
	MaxParts int
	// MaxURLScan is the number of decoded bytes of text/plain and text/html
	// parts scanned for URLs, over the whole message; default 1 MiB.
	MaxURLScan int64
	// MaxURLDomains is the number of distinct URL host names kept; default 50.
	MaxURLDomains int
}

// Defaults for MIMELimits.
const (
	DefaultMIMEMaxDepth      = 10
	DefaultMIMEMaxParts      = 200
	DefaultMIMEMaxURLScan    = 1 << 20
	DefaultMIMEMaxURLDomains = 50
)

const (
	// go-message parses a header block into several allocations per field
	// (over 100 bytes of memory per byte of "a:" lines), so header blocks
	// get budgets well above what real mail carries but far below the
	// message size: a message header is read up to mimeMaxHeaderBytes keeping
	// only its Content-* fields (bounded again); a body part's header,
	// which go-message's multipart reader parses whole, up to
	// mimeMaxPartHeaderBytes.
	mimeMaxHeaderBytes       = 1 << 20
	mimeMaxContentFieldBytes = 16 << 10
	mimeMaxContentFields     = 32
	mimeMaxPartHeaderBytes   = 16 << 10
	// Slack for bytes the multipart reader buffers ahead (its bufio size).
	mimePartReadAhead = 8 << 10
	// RFC 2046 5.1.1: a boundary is 1 to 70 characters; allow some slack for
	// sloppy senders but keep it far below the multipart reader's buffer.
	mimeMaxBoundaryLen = 200
	// Bounded filename length in bytes (most file systems: 255).
	mimeMaxFilenameBytes = 255
	// mimeSniffLen is what net/http.DetectContentType looks at.
	mimeSniffLen = 512
	// A URL's authority (userinfo, host, port) longer than this is not
	// parsed for a host name; it still counts as a URL.
	urlMaxAuthority = 1024
	mimeCopyBufSize = 32 << 10
)

// MessageFacts walks the MIME tree of msg (a complete RFC 5322 message:
// header, blank line, body) and returns its attachments, the URL facts of its
// text parts and a problem code ("" when the structure was fine, else one of
// MIMEMalformed, MIMEDepthLimit, MIMEPartLimit; the first one met wins).
//
// An attachment is any leaf part with a filename (Content-Disposition
// filename, else Content-Type name; RFC 2231 and RFC 2047 decoded, path and
// control characters removed, length bounded) or with a type that is neither
// text/* nor a container. message/rfc822 parts are walked as messages (their
// attachments are reported; the container itself is not).
//
// It never panics and never fails: a malformed message yields what could be
// read plus the problem. The slices returned are never nil, so the policy
// sees [] rather than null. It reads msg at most to its end and holds no part
// in memory; it is safe for concurrent use.
func MessageFacts(msg io.Reader, lim MIMELimits) (attachments []Attachment, urls URLFacts, problem string) {
	return messageFacts(msg, lim, true)
}

// messageFacts is MessageFacts; recoverPanics turns a panic in the walk (a
// bug here or in a library, on hostile input) into MIMEMalformed instead of
// taking the gateway down. The fuzz target passes false so such bugs surface.
func messageFacts(msg io.Reader, lim MIMELimits, recoverPanics bool) ([]Attachment, URLFacts, string) {
	w := newMIMEWalker(lim)
	sc := mimeScratchPool.Get().(*mimeScratch)
	defer mimeScratchPool.Put(sc)
	w.buf, w.urls.win = sc.copy[:], sc.win[:]
	if sc.root == nil {
		sc.root = bufio.NewReader(nil)
	}
	w.root = sc.root
	defer sc.root.Reset(nil) // drop the message for the GC while pooled
	func() {
		if recoverPanics {
			defer func() {
				if r := recover(); r != nil {
					w.setProblem(MIMEMalformed)
				}
			}()
		}
		w.message(msg, 0)
	}()
	return w.atts, w.urls.facts(), w.problem
}

type mimeWalker struct {
	lim     MIMELimits
	parts   int
	stop    bool
	problem string
	atts    []Attachment
	urls    urlScanner
	buf     []byte // shared copy buffer
	root    *bufio.Reader
}

func newMIMEWalker(lim MIMELimits) *mimeWalker {
	if lim.MaxDepth <= 0 {
		lim.MaxDepth = DefaultMIMEMaxDepth
	}
	if lim.MaxParts <= 0 {
		lim.MaxParts = DefaultMIMEMaxParts
	}
	if lim.MaxURLScan <= 0 {
		lim.MaxURLScan = DefaultMIMEMaxURLScan
	}
	if lim.MaxURLDomains <= 0 {
		lim.MaxURLDomains = DefaultMIMEMaxURLDomains
	}
	return &mimeWalker{
		lim:  lim,
		atts: []Attachment{},
		urls: urlScanner{left: lim.MaxURLScan, maxDomains: lim.MaxURLDomains},
	}
}

func (w *mimeWalker) setProblem(p string) {
	if w.problem == "" {
		w.problem = p
	}
}

func (w *mimeWalker) copyBuf() []byte {
	if w.buf == nil {
		w.buf = make([]byte, mimeCopyBufSize)
	}
	return w.buf
}

// mimeScratch holds the walk's large buffers, reused across messages.
type mimeScratch struct {
	copy [mimeCopyBufSize]byte
	win  [urlChunk + urlKeep]byte
	root *bufio.Reader // reads the root message; nested ones get their own
}

var mimeScratchPool = sync.Pool{New: func() any { return new(mimeScratch) }}

// mimeBudgetReader fails once more than n bytes were read through it; n is
// raised and lowered by its owner around the reads it wants bounded.
type mimeBudgetReader struct {
	r io.Reader
	n int64
}

var errMIMEHeaderTooBig = errors.New("mime header exceeds its size budget")

func (b *mimeBudgetReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, errMIMEHeaderTooBig
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	b.n -= int64(n)
	return n, err
}

// message reads one message (the root, or the body of a message/rfc822
// part at the given depth) and walks its content.
func (w *mimeWalker) message(r io.Reader, depth int) {
	var br *bufio.Reader
	if depth == 0 && w.root != nil {
		br = w.root
		br.Reset(r)
	} else {
		br = bufio.NewReader(r)
	}
	h, bad, err := readContentHeader(br)
	if bad || err != nil {
		w.setProblem(MIMEMalformed)
	}
	if err != nil {
		return
	}
	w.entity(h, br, depth, "text/plain")
}

// readContentHeader reads a message header up to the blank line and returns
// its Content-* fields (RFC 2045 9: the only ones MIME structure depends
// on) parsed by go-message. The other fields, which the gateway parses
// elsewhere, are skipped without being stored, so a header made of a huge
// number of small fields costs no memory here. bad reports lines that are
// not header fields (skipped, as lenient readers do).
func readContentHeader(br *bufio.Reader) (h textproto.Header, bad bool, err error) {
	var kept []byte
	keep, fields, total := false, 0, 0
	for first := true; ; first = false {
		line, err := br.ReadSlice('\n')
		total += len(line)
		if total > mimeMaxHeaderBytes {
			return h, bad, errMIMEHeaderTooBig
		}
		if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
			return h, bad, err
		}
		end := false
		switch {
		case len(line) == 0 || string(line) == "\r\n" || string(line) == "\n":
			// End of header, or of input (a message without a body).
			end = true
		case line[0] == ' ' || line[0] == '\t':
			// A continuation line (RFC 5322 2.2.3) of the current field.
			if first {
				bad = true
			}
		default:
			keep = mimeHasPrefixFold(line, "content-")
			if keep {
				fields++
			}
			if bytes.IndexByte(line, ':') < 0 {
				bad, keep = true, false
			}
		}
		if keep && !end {
			if len(kept)+len(line) > mimeMaxContentFieldBytes || fields > mimeMaxContentFields {
				return h, bad, errMIMEHeaderTooBig
			}
			kept = append(kept, line...)
		}
		// A line longer than the buffer continues in the next slice.
		for err == bufio.ErrBufferFull {
			line, err = br.ReadSlice('\n')
			if total += len(line); total > mimeMaxHeaderBytes {
				return h, bad, errMIMEHeaderTooBig
			}
			if keep {
				if len(kept)+len(line) > mimeMaxContentFieldBytes {
					return h, bad, errMIMEHeaderTooBig
				}
				kept = append(kept, line...)
			}
		}
		if end || err == io.EOF {
			break
		}
		if err != nil {
			return h, bad, err
		}
	}
	if len(kept) > 0 && kept[len(kept)-1] != '\n' {
		kept = append(kept, '\r', '\n')
	}
	kept = append(kept, '\r', '\n')
	// kept is all there is to read: a reader of its size, not 4 KiB.
	h, err = textproto.ReadHeader(bufio.NewReaderSize(bytes.NewReader(kept), len(kept)))
	if err != nil {
		bad = true
	}
	return h, bad, nil
}

func mimeHasPrefixFold(b []byte, prefix string) bool {
	return len(b) >= len(prefix) && strings.EqualFold(string(b[:len(prefix)]), prefix)
}

// entity walks one entity whose header is h and raw (still
// transfer-encoded) body is body. depth counts the containers around it.
func (w *mimeWalker) entity(h textproto.Header, body io.Reader, depth int, defaultType string) {
	if conflictingContentFields(h) {
		w.setProblem(MIMEMalformed)
	}
	ct, params := w.contentType(h, defaultType)
	switch {
	case strings.HasPrefix(ct, "multipart/"):
		if depth+1 > w.lim.MaxDepth {
			w.setProblem(MIMEDepthLimit)
			return
		}
		w.multipart(body, params["boundary"], depth+1, ct == "multipart/digest")
	case ct == "message/rfc822" || ct == "message/global":
		if depth+1 > w.lim.MaxDepth {
			w.setProblem(MIMEDepthLimit)
			return
		}
		// RFC 2046 5.2.1 forbids encoding message/rfc822, but senders do it
		// and readers decode it.
		dec, ok := decodeCTE(h, body)
		if !ok {
			w.setProblem(MIMEMalformed)
		}
		w.message(dec, depth+1)
	default:
		w.leaf(h, ct, params, body)
	}
}

// conflictingContentFields reports Content-* fields given twice with different
// values: readers disagree on which one wins, so it is an evasion tool.
func conflictingContentFields(h textproto.Header) bool {
	for _, k := range [...]string{"Content-Type", "Content-Disposition", "Content-Transfer-Encoding"} {
		vs := h.Values(k)
		for _, v := range vs[min(1, len(vs)):] {
			if !strings.EqualFold(strings.TrimSpace(v), strings.TrimSpace(vs[0])) {
				return true
			}
		}
	}
	return false
}

// contentType returns the lower-cased media type without parameters and the
// parameters. RFC 2045 5.2: a missing or unusable Content-Type means
// text/plain (message/rfc822 inside multipart/digest, RFC 2046 5.1.5).
func (w *mimeWalker) contentType(h textproto.Header, defaultType string) (string, map[string]string) {
	v := h.Get("Content-Type")
	if strings.TrimSpace(v) == "" {
		return defaultType, map[string]string{}
	}
	mt, params, conflict := mimeParseMediaType(v)
	if conflict {
		w.setProblem(MIMEMalformed)
	}
	if mt == "" {
		mt = defaultType
	}
	return mt, params
}

func (w *mimeWalker) multipart(body io.Reader, boundary string, depth int, digest bool) {
	if boundary == "" || len(boundary) > mimeMaxBoundaryLen {
		w.setProblem(MIMEMalformed)
		return
	}
	br := bufio.NewReader(body)
	first, err := skipPreamble(br, boundary)
	if err == io.EOF {
		return // only a close-delimiter: no parts
	}
	if err != nil {
		w.setProblem(MIMEMalformed)
		return
	}
	// go-message reads part headers without a size bound; bound each
	// NextPart call (boundary line plus header) from outside.
	guard := &mimeBudgetReader{r: io.MultiReader(bytes.NewReader(first), br)}
	mr := textproto.NewMultipartReader(guard, boundary)
	defaultType := "text/plain"
	if digest {
		defaultType = "message/rfc822"
	}
	for !w.stop {
		guard.n = mimeMaxPartHeaderBytes + mimePartReadAhead
		p, err := mr.NextPart()
		guard.n = math.MaxInt64
		if err == io.EOF {
			return
		}
		if err != nil {
			w.setProblem(MIMEMalformed)
			return
		}
		if w.parts >= w.lim.MaxParts {
			w.setProblem(MIMEPartLimit)
			w.stop = true
			return
		}
		w.parts++
		w.entity(p.Header, p, depth, defaultType)
		if w.stop {
			return
		}
		// Drain what the walk left unread so the next NextPart only reads
		// the delimiter and header within its budget.
		if _, err := io.CopyBuffer(io.Discard, p, w.copyBuf()); err != nil {
			w.setProblem(MIMEMalformed)
			return
		}
	}
}

// skipPreamble reads up to and including the first delimiter line (RFC 2046
// 5.1.1) and returns a copy of it. io.EOF means the first delimiter was the
// close-delimiter; another error means there was none.
func skipPreamble(br *bufio.Reader, boundary string) ([]byte, error) {
	dash := "--" + boundary
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A long line is not a delimiter: skip the rest of it.
			for err == bufio.ErrBufferFull {
				_, err = br.ReadSlice('\n')
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		if rest, ok := bytes.CutPrefix(line, []byte(dash)); ok {
			if bytes.HasPrefix(rest, []byte("--")) {
				return nil, io.EOF
			}
			rest = bytes.TrimLeft(rest, " \t")
			if string(rest) == "\r\n" || string(rest) == "\n" {
				return bytes.Clone(line), nil
			}
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// decodeCTE undoes the Content-Transfer-Encoding (RFC 2045 6) with
// go-message's lenient decoders. An unknown encoding gives the raw bytes
// and false.
func decodeCTE(h textproto.Header, raw io.Reader) (io.Reader, bool) {
	cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding")))
	switch cte {
	case "", "7bit", "8bit", "binary":
		return raw, true
	}
	// Only the transfer encoding: the charset stays as sent, so hashes match
	// the file a recipient would save.
	var eh message.Header
	eh.Set("Content-Type", "application/octet-stream")
	eh.Set("Content-Transfer-Encoding", cte)
	e, err := message.New(eh, raw)
	if err != nil {
		return raw, false
	}
	return e.Body, true
}

// leaf reads one non-container part: hashes and sniffs it when it is an
// attachment, scans it for URLs when it is text/plain or text/html.
func (w *mimeWalker) leaf(h textproto.Header, ct string, params map[string]string, raw io.Reader) {
	name := w.filename(h, params)
	isText := ct == "text/plain" || ct == "text/html"
	isAttachment := name != "" || !strings.HasPrefix(ct, "text/")
	scan := isText && w.urls.left > 0
	if !isAttachment && !scan {
		return
	}
	dec, ok := decodeCTE(h, raw)
	if !ok {
		w.setProblem(MIMEMalformed)
	}
	var sink *contentSink
	src := dec
	if isAttachment {
		sink = newContentSink()
		src = io.TeeReader(dec, sink)
	}
	if scan {
		text := src
		if cs := strings.ToLower(strings.TrimSpace(params["charset"])); cs != "" && cs != "utf-8" && cs != "us-ascii" {
			if r, err := charset.Reader(cs, src); err == nil {
				text = r
			}
		}
		if err := w.urls.scan(text); err != nil {
			w.setProblem(MIMEMalformed)
		}
	}
	if sink == nil {
		return
	}
	if _, err := io.CopyBuffer(sink, dec, w.copyBuf()); err != nil {
		w.setProblem(MIMEMalformed)
	}
	w.atts = append(w.atts, Attachment{
		Filename:    name,
		ContentType: ct,
		SniffedType: sink.sniff(),
		Size:        sink.size,
		SHA256:      hex.EncodeToString(sink.hash.Sum(nil)),
	})
}

// filename is the sanitized Content-Disposition filename, else the
// Content-Type name (RFC 2183 2.3; "name" is the older RFC 1341 form).
func (w *mimeWalker) filename(h textproto.Header, ctParams map[string]string) string {
	if v := h.Get("Content-Disposition"); strings.TrimSpace(v) != "" {
		_, params, conflict := mimeParseMediaType(v)
		if conflict {
			w.setProblem(MIMEMalformed)
		}
		if name := cleanFilename(params["filename"]); name != "" {
			return name
		}
	}
	return cleanFilename(ctParams["name"])
}

var mimeWordDecoder = mime.WordDecoder{CharsetReader: charset.Reader}

// cleanFilename decodes RFC 2047 encoded-words and makes the name safe to
// show and compare: no directories, no control or format characters (the
// right-to-left override of "invoice<RLO>fdp.exe" among them), no trailing
// dots or spaces (Windows drops them, so "a.exe." is "a.exe"), bounded
// length keeping the extension.
func cleanFilename(s string) string {
	if s == "" {
		return ""
	}
	if d, err := mimeWordDecoder.DecodeHeader(s); err == nil {
		s = d
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) {
			return -1
		}
		return r
	}, s)
	if i := strings.LastIndexAny(s, `/\`); i >= 0 {
		s = s[i+1:]
	}
	// A drive-relative Windows path ("C:evil.exe").
	if len(s) > 2 && s[1] == ':' && (s[0]|0x20 >= 'a' && s[0]|0x20 <= 'z') {
		s = s[2:]
	}
	s = strings.TrimRight(strings.TrimSpace(s), ". ")
	if len(s) > mimeMaxFilenameBytes {
		s = truncateMiddle(s, mimeMaxFilenameBytes)
	}
	return s
}

// truncateMiddle cuts s to at most n bytes on rune boundaries, keeping the
// end (where the extension is) and marking the cut with "…".
func truncateMiddle(s string, n int) string {
	const mark = "…"
	tail := 64
	head := n - tail - len(mark)
	for head > 0 && !utf8.RuneStart(s[head]) {
		head--
	}
	t := len(s) - tail
	for t < len(s) && !utf8.RuneStart(s[t]) {
		t++
	}
	return s[:head] + mark + s[t:]
}

// mimeParseMediaType parses a Content-Type or Content-Disposition value with
// mime.ParseMediaType, falling back to a lenient reading of the parameters
// that mail readers accept but the standard parser refuses (unquoted
// spaces, stray characters, RFC 2231 values in charsets other than UTF-8).
// conflict reports a parameter given twice with different values.
func mimeParseMediaType(v string) (mt string, params map[string]string, conflict bool) {
	mt, params, err := mime.ParseMediaType(v)
	if err == nil && !strings.Contains(v, "*") {
		return mt, params, false
	}
	if mt == "" {
		base, _, _ := strings.Cut(v, ";")
		mt = strings.ToLower(strings.TrimSpace(base))
	}
	if params == nil {
		params = map[string]string{}
	}
	lenient, conflict := mimeLenientParams(v)
	lv := strings.ToLower(v)
	for k, val := range lenient {
		// The standard parser drops RFC 2231 pieces in charsets other than
		// UTF-8 and keeps the rest of a continuation: prefer ours there.
		if _, ok := params[k]; !ok || strings.Contains(lv, k+"*") {
			params[k] = val
		}
	}
	return mt, params, conflict
}

// mimeLenientParams reads "; key=value" parameters the forgiving way: a value
// runs to the next semicolon outside quotes; RFC 2231 extended values and
// continuations are joined and decoded from their charset, and win over a
// plain value of the same name (RFC 2231 4.1 lets senders give both).
func mimeLenientParams(v string) (map[string]string, bool) {
	_, rest, _ := strings.Cut(v, ";")
	raw := map[string]string{}
	conflict := false
	for len(rest) > 0 && len(raw) < 64 {
		seg, next := cutMediaParam(rest)
		rest = next
		k, val, ok := strings.Cut(seg, "=")
		if !ok {
			continue
		}
		k = strings.ToLower(strings.TrimSpace(k))
		val = unquoteParam(strings.TrimSpace(val))
		if k == "" {
			continue
		}
		if old, seen := raw[k]; seen {
			if old != val {
				conflict = true
			}
			continue
		}
		raw[k] = val
	}
	out := map[string]string{}
	for k := range raw {
		base, _, _ := strings.Cut(k, "*")
		if _, done := out[base]; done {
			continue
		}
		if val, ok := raw[base+"*"]; ok {
			cs, enc := splitRFC2231(val)
			out[base] = charsetToUTF8(cs, pctDecode(enc))
			continue
		}
		if joined, ok := joinContinuations(raw, base); ok {
			out[base] = joined
			continue
		}
		if val, ok := raw[base]; ok {
			out[base] = val
		}
	}
	return out, conflict
}

// joinContinuations joins base*0, base*0*, base*1, ... (RFC 2231 3, 4.1):
// starred pieces are percent-encoded in the charset the first one names.
func joinContinuations(raw map[string]string, base string) (string, bool) {
	var b strings.Builder
	cs := ""
	n := 0
	for ; n < 64; n++ {
		key := base + "*" + strconv.Itoa(n)
		if part, ok := raw[key]; ok {
			b.WriteString(part)
			continue
		}
		part, ok := raw[key+"*"]
		if !ok {
			break
		}
		if n == 0 {
			cs, part = splitRFC2231(part)
		}
		b.WriteString(pctDecode(part))
	}
	if n == 0 {
		return "", false
	}
	return charsetToUTF8(cs, b.String()), true
}

// cutMediaParam returns the text up to the next ';' outside a quoted string.
func cutMediaParam(s string) (seg, rest string) {
	inQuote := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\' && inQuote:
			i++
		case c == '"':
			inQuote = !inQuote
		case c == ';' && !inQuote:
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}

func unquoteParam(s string) string {
	if len(s) < 1 || s[0] != '"' {
		return s
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		c := s[i]
		if c == '"' {
			break
		}
		if c == '\\' && i+1 < len(s) {
			i++
			c = s[i]
		}
		b.WriteByte(c)
	}
	return b.String()
}

// splitRFC2231 splits charset'language'value (RFC 2231 4).
func splitRFC2231(s string) (cs, value string) {
	cs, rest, ok := strings.Cut(s, "'")
	if !ok {
		return "", s
	}
	_, value, ok = strings.Cut(rest, "'")
	if !ok {
		return "", s
	}
	return strings.ToLower(cs), value
}

func pctDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isPctHex(s[i+1]) && isPctHex(s[i+2]) {
			b.WriteByte(pctUnhex(s[i+1])<<4 | pctUnhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isPctHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func pctUnhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// charsetToUTF8 converts s from the named charset; unknown charsets pass through
// (cleanFilename replaces invalid UTF-8).
func charsetToUTF8(cs, s string) string {
	switch cs {
	case "", "utf-8", "us-ascii":
		return s
	}
	r, err := charset.Reader(cs, strings.NewReader(s))
	if err != nil {
		return s
	}
	out, err := io.ReadAll(io.LimitReader(r, 4*int64(len(s))+16))
	if err != nil {
		return s
	}
	return string(out)
}

// contentSink hashes an attachment while it streams past and keeps only what
// sniffing needs: the first bytes, the bytes at the ISO 9660 / UDF
// volume-descriptor offsets, and whether a ZIP names Office or Java parts.
type contentSink struct {
	hash  hash.Hash
	size  int64
	head  [mimeSniffLen]byte
	headN int
	vd    [len(volumeDescOffsets)][5]byte
	zip   *zipNames
}

// ECMA-119 8.1: volume descriptors start at sector 16 (0x8000); the
// standard identifier follows the type byte. Also look at the next two
// sectors, where some images put theirs.
var volumeDescOffsets = [...]int64{0x8001, 0x8801, 0x9001}

func newContentSink() *contentSink {
	return &contentSink{hash: sha256.New()}
}

func (s *contentSink) Write(p []byte) (int, error) {
	s.hash.Write(p)
	if s.headN < len(s.head) {
		s.headN += copy(s.head[s.headN:], p)
		if s.zip == nil && s.headN >= 4 && string(s.head[:4]) == "PK\x03\x04" {
			s.zip = &zipNames{}
		}
	}
	start, end := s.size, s.size+int64(len(p))
	for i, off := range volumeDescOffsets {
		for j := range s.vd[i] {
			if o := off + int64(j); o >= start && o < end {
				s.vd[i][j] = p[o-start]
			}
		}
	}
	if s.zip != nil {
		s.zip.write(p)
	}
	s.size = end
	return len(p), nil
}

type sniffMagic struct {
	off  int
	sig  string
	mime string
}

// Signatures checked before net/http.DetectContentType, which knows none of
// the executables, disk images and several archives mail filters care about.
var sniffMagics = []sniffMagic{
	{0, "MZ", "application/x-msdownload"},
	{0, "\x7fELF", "application/x-executable"},
	{0, "\xfe\xed\xfa\xce", "application/x-mach-binary"},
	{0, "\xfe\xed\xfa\xcf", "application/x-mach-binary"},
	{0, "\xce\xfa\xed\xfe", "application/x-mach-binary"},
	{0, "\xcf\xfa\xed\xfe", "application/x-mach-binary"},
	{0, "\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/x-ole-storage"},
	{0, "L\x00\x00\x00\x01\x14\x02\x00", "application/x-ms-shortcut"},
	{0, "MSCF\x00\x00\x00\x00", "application/vnd.ms-cab-compressed"},
	{0, "conectix", "application/x-vhd"},
	{0, "vhdxfile", "application/x-vhdx"},
	{0, "%PDF-", "application/pdf"},
	{0, "{\\rtf", "application/rtf"},
	{0, "7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"},
	{0, "Rar!\x1a\x07\x00", "application/x-rar-compressed"},
	{0, "Rar!\x1a\x07\x01\x00", "application/x-rar-compressed"},
	{0, "\x1f\x8b", "application/gzip"},
	{0, "\xfd7zXZ\x00", "application/x-xz"},
	{0, "BZh", "application/x-bzip2"},
	{0, "\x28\xb5\x2f\xfd", "application/zstd"},
	{7, "**ACE**", "application/x-ace-compressed"},
	{257, "ustar", "application/x-tar"},
	{0, "PK\x03\x04", "application/zip"},
	{0, "PK\x05\x06", "application/zip"},
	{0, "PK\x07\x08", "application/zip"},
}

// sniff names what the content looks like.
func (s *contentSink) sniff() string {
	if s.size == 0 {
		return "application/x-empty"
	}
	head := s.head[:s.headN]
	if len(head) >= 8 && string(head[:4]) == "\xca\xfe\xba\xbe" {
		// Mach-O universal binaries and Java classes share this magic; a
		// class file has its major version (>= 45) where a universal
		// binary has its small architecture count.
		if uint32(head[4])<<24|uint32(head[5])<<16|uint32(head[6])<<8|uint32(head[7]) < 45 {
			return "application/x-mach-binary"
		}
		return "application/java-vm"
	}
	for _, m := range sniffMagics[:2] { // executables win over polyglot disk images
		if sniffHasSig(head, m) {
			return m.mime
		}
	}
	for _, vd := range s.vd {
		switch string(vd[:]) {
		case "CD001":
			return "application/x-iso9660-image"
		case "BEA01", "NSR02", "NSR03":
			return "application/x-udf-image"
		}
	}
	for _, m := range sniffMagics[2:] {
		if sniffHasSig(head, m) {
			if m.mime == "application/zip" && s.zip != nil {
				return s.zip.kind()
			}
			return m.mime
		}
	}
	// PDF readers accept a header anywhere in the first 1024 bytes.
	if bytes.Contains(head, []byte("%PDF-")) {
		return "application/pdf"
	}
	t := http.DetectContentType(head)
	t, _, _ = strings.Cut(t, ";")
	return strings.TrimSpace(t)
}

func sniffHasSig(head []byte, m sniffMagic) bool {
	return len(head) >= m.off+len(m.sig) && string(head[m.off:m.off+len(m.sig)]) == m.sig
}

// zipNames looks for member names in a ZIP stream. Names are stored
// uncompressed in every local header and in the central directory (APPNOTE
// 4.3.7, 4.3.12), so a substring search over the stream finds them without
// unpacking or buffering anything: O(size) time, a few bytes of state.
type zipNames struct {
	found uint8
	carry [zipNeedleMax - 1]byte // last bytes of the previous writes
	n     int
	join  [2 * (zipNeedleMax - 1)]byte
}

const (
	zipContentTypes uint8 = 1 << iota
	zipWord
	zipExcel
	zipExcelBinary
	zipPowerPoint
	zipVBA
	zipManifest
)

var zipNeedles = []struct {
	name string
	bit  uint8
}{
	{"[Content_Types].xml", zipContentTypes},
	{"word/document.xml", zipWord},
	{"xl/workbook.xml", zipExcel},
	{"xl/workbook.bin", zipExcelBinary},
	{"ppt/presentation.xml", zipPowerPoint},
	{"vbaProject.bin", zipVBA},
	{"META-INF/MANIFEST.MF", zipManifest},
}

const zipNeedleMax = 20 // longest needle

func (z *zipNames) write(p []byte) {
	const keep = zipNeedleMax - 1
	if z.n > 0 {
		// Needles straddling the previous write.
		k := copy(z.join[:], z.carry[:z.n])
		k += copy(z.join[k:], p[:min(len(p), keep)])
		z.search(z.join[:k])
	}
	z.search(p)
	if len(p) >= keep {
		z.n = copy(z.carry[:], p[len(p)-keep:])
		return
	}
	k := copy(z.join[:], z.carry[:z.n])
	k += copy(z.join[k:], p)
	z.n = copy(z.carry[:], z.join[max(0, k-keep):k])
}

func (z *zipNames) search(b []byte) {
	for _, n := range zipNeedles {
		if z.found&n.bit == 0 && bytes.Contains(b, []byte(n.name)) {
			z.found |= n.bit
		}
	}
}

// kind maps the names found to an OOXML, macro-enabled OOXML (ECMA-376
// part 2 and [MS-OFFMACRO]: a vbaProject.bin part), Java archive or plain
// ZIP type.
func (z *zipNames) kind() string {
	f := z.found
	macro := f&zipVBA != 0
	if f&zipContentTypes != 0 {
		switch {
		case f&zipWord != 0 && macro:
			return "application/vnd.ms-word.document.macroenabled.12"
		case f&zipWord != 0:
			return "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
		case f&zipExcelBinary != 0:
			return "application/vnd.ms-excel.sheet.binary.macroenabled.12"
		case f&zipExcel != 0 && macro:
			return "application/vnd.ms-excel.sheet.macroenabled.12"
		case f&zipExcel != 0:
			return "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
		case f&zipPowerPoint != 0 && macro:
			return "application/vnd.ms-powerpoint.presentation.macroenabled.12"
		case f&zipPowerPoint != 0:
			return "application/vnd.openxmlformats-officedocument.presentationml.presentation"
		}
	}
	if f&zipManifest != 0 {
		return "application/java-archive"
	}
	return "application/zip"
}

// urlScanner counts http(s) URLs and bare www. names in decoded text and
// collects their distinct host names, within a byte budget for the message.
type urlScanner struct {
	left       int64
	maxDomains int
	count      int
	domains    map[string]struct{}
	win        []byte // lower-cased in place as it is scanned
	// The last authority measured in the current window: low[runStart:runEnd].
	runStart, runEnd int
}

const (
	urlChunk = 32 << 10
	// Bytes kept between reads so that a URL starting near the end of one
	// read is parsed whole: the scheme plus a maximal authority.
	urlKeep = urlMaxAuthority + 16
)

func (u *urlScanner) facts() URLFacts {
	d := make([]string, 0, len(u.domains))
	for k := range u.domains {
		d = append(d, k)
	}
	slices.Sort(d)
	return URLFacts{Count: u.count, Domains: d}
}

// scan reads r until EOF or until the message's budget of scanned bytes
// runs out (a URL starting within the budget is still read whole). A read
// error other than io.EOF is returned after what was read is scanned.
func (u *urlScanner) scan(r io.Reader) error {
	if u.win == nil {
		u.win = make([]byte, urlChunk+urlKeep)
	}
	// win[:n] holds data; bytes before from were scanned already and are
	// kept as context (the byte before "www." decides its word boundary).
	n, from := 0, 0
	for u.left > 0 {
		limit := len(u.win)
		if int64(limit-from-urlKeep) > u.left {
			limit = from + int(u.left) + urlKeep
		}
		var err error
		for empty := 0; n < limit && err == nil; {
			var m int
			m, err = r.Read(u.win[n:limit])
			n += m
			if m == 0 {
				if empty++; empty > 100 && err == nil {
					err = io.ErrNoProgress
				}
			}
		}
		end := n
		if err == nil {
			end = n - urlKeep
		}
		stop := err != nil
		if int64(end-from) >= u.left {
			end = from + int(u.left)
			stop = true
		}
		u.scanWindow(u.win[:n], from, end)
		u.left -= int64(end - from)
		if stop {
			if err == io.EOF {
				return nil
			}
			return err
		}
		keepFrom := end - 1
		n = copy(u.win, u.win[keepFrom:n])
		from = 1
	}
	return nil
}

// scanWindow finds URLs starting in data[from:end]; data beyond end is
// only look-ahead for their authority.
func (u *urlScanner) scanWindow(data []byte, from, end int) {
	if from >= end {
		return
	}
	low := data
	for i, c := range data {
		if 'A' <= c && c <= 'Z' {
			low[i] = c + 'a' - 'A'
		}
	}
	// Next match of a needle starting in [i, end); -1 when none is left.
	// Needles are 4 bytes: one may start before end and run past it.
	next := func(needle string, i int) int {
		if i >= end {
			return -1
		}
		if j := bytes.Index(low[i:min(len(low), end+3)], []byte(needle)); j >= 0 && i+j < end {
			return i + j
		}
		return -1
	}
	u.runStart, u.runEnd = 0, 0
	h, w := next("http", from), next("www.", from)
	for h >= 0 || w >= 0 {
		if h >= 0 && (w < 0 || h < w) {
			rest := low[h+4:]
			if len(rest) > 0 && rest[0] == 's' {
				rest = rest[1:]
			}
			// Browsers read backslashes in http(s) URLs as slashes (WHATWG
			// URL "special" schemes), so "https:\\host" is a link too.
			if len(rest) >= 3 && rest[0] == ':' && isSlash(rest[1]) && isSlash(rest[2]) {
				u.found(low, len(low)-len(rest)+3)
			}
			h = next("http", h+4)
			continue
		}
		if (w == 0 || !isWordByte(low[w-1])) && w+4 < len(low) && isHostStart(low[w+4]) {
			u.found(low, w)
		}
		w = next("www.", w+4)
	}
}

func isSlash(c byte) bool { return c == '/' || c == '\\' }

func isHostStart(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c >= 0x80
}

// isWordByte reports bytes that make "www." part of a longer token (a host
// name, a path, an address) rather than the start of one.
func isWordByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '.' || c == '-' || c == '_' || c == '/' || c == '@' || c >= 0x80
}

// found records one URL whose authority starts at low[start].
func (u *urlScanner) found(low []byte, start int) {
	end := u.authorityEnd(low, start)
	n := end - start
	if n == 0 {
		return // "http://" alone
	}
	u.count++
	if n > urlMaxAuthority || len(u.domains) >= u.maxDomains {
		return
	}
	host := urlHost(string(low[start:end]))
	if host == "" {
		return
	}
	if u.domains == nil {
		u.domains = map[string]struct{}{}
	}
	u.domains[host] = struct{}{}
}

// authorityEnd returns where the authority starting at low[start] ends,
// looking at most urlMaxAuthority+1 bytes ahead. Matches inside an
// authority already measured ("http://:www.:www.…") resume where that one
// stopped, so each byte is looked at once per window: linear time.
func (u *urlScanner) authorityEnd(low []byte, start int) int {
	limit := min(len(low), start+urlMaxAuthority+1)
	i := start
	if start >= u.runStart && start < u.runEnd {
		i = u.runEnd
	}
	for i < limit && isAuthorityByte(low[i]) {
		i++
	}
	u.runStart, u.runEnd = start, i
	return min(i, limit)
}

// isAuthorityByte: RFC 3986 3.2 authority characters minus those that
// rarely appear there but often follow a URL in text or HTML ('&' of an
// entity, '=', '*', ',', ';', quotes, brackets other than IPv6's), plus
// non-ASCII for internationalized names.
func isAuthorityByte(c byte) bool {
	return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c >= 0x80 ||
		strings.IndexByte("-._~!$+@:[]%", c) >= 0
}

// urlHost returns the lower-case host name of an authority in A-label form,
// "" when there is no usable one.
func urlHost(auth string) string {
	if i := strings.LastIndexByte(auth, '@'); i >= 0 {
		auth = auth[i+1:]
	}
	var host string
	if strings.HasPrefix(auth, "[") {
		end := strings.IndexByte(auth, ']')
		if end < 0 {
			return ""
		}
		host = auth[1:end]
	} else {
		host, _, _ = strings.Cut(auth, ":")
		host = strings.TrimRight(host, ".")
	}
	if host == "" || strings.ContainsAny(host, "[]%!$+~") {
		return ""
	}
	for i := 0; i < len(host); i++ {
		if host[i] >= 0x80 {
			// Non-ASCII: UTS 46 lookup mapping to A-labels; names it
			// refuses are skipped.
			a, err := idna.Lookup.ToASCII(host)
			if err != nil {
				return ""
			}
			host = strings.ToLower(a)
			break
		}
	}
	if len(host) > 253 {
		return ""
	}
	return host
}
