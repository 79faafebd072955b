package auth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// DKIMResult is the verdict on one DKIM-Signature header field. Its JSON form
// is part of the policy input (input.auth.dkim[]).
type DKIMResult struct {
	// Result is an RFC 8601 2.7.1 word: pass, fail, neutral, temperror,
	// permerror or policy ("policy": signed, but not verified because it is
	// over the signature cap).
	Result     string `json:"result"`
	Domain     string `json:"domain"`               // d=
	Selector   string `json:"selector"`             // s=
	Algorithm  string `json:"algorithm"`            // a=
	HeaderB    string `json:"header_b"`             // first 12 characters of b= (header.b in A-R)
	Identifier string `json:"identifier,omitempty"` // i=
	Reason     string `json:"reason,omitempty"`
	// BodyLength: the signature has an l= tag (RFC 6376 3.5). It can pass:
	// it then vouches for the first l canonical octets of the body only.
	BodyLength bool `json:"body_length,omitempty"`
	// UnsignedContent: content follows the signed length; such a signature
	// must not count for DMARC (RFC 6376 8.2).
	UnsignedContent bool `json:"unsigned_content,omitempty"`
	// Aligned: d= is in identifier alignment with the RFC5322.From domain,
	// under the mode of the DMARC record (set by EvaluateDMARC, whatever
	// Result is).
	Aligned bool `json:"aligned"`
}

// DKIMOptions bounds VerifyDKIM. Zero values mean the defaults.
type DKIMOptions struct {
	// MaxSignatures is the number of signatures verified (default 5); the
	// rest are reported with result "policy" and not verified.
	MaxSignatures int
	// Timeout bounds the key lookups of one message (default 10s).
	Timeout time.Duration
}

const (
	defaultDKIMMaxSignatures = 5
	defaultDKIMTimeout       = 10 * time.Second
	// maxDKIMHeaderBytes bounds the header section we buffer. The DATA
	// validator bounds the message; this bounds our own memory per message.
	maxDKIMHeaderBytes = 1 << 20
	// dkimMaxUnverifiedReported bounds the results for signatures over the
	// cap.
	dkimMaxUnverifiedReported = 5
	// dkimHeaderBLen: RFC 6008 2 asks for enough of b= to be unique; 12 base64
	// characters (72 bits) is plenty and keeps the A-R field short.
	dkimHeaderBLen = 12
	// dkimMinRSABits: RFC 8301 3.2, verifiers MUST NOT consider signatures using
	// RSA keys of less than 1024 bits as valid.
	dkimMinRSABits = 1024
)

// dkimSig is what we read ourselves from one DKIM-Signature field; go-msgauth
// does not expose s=, a=, b=, l=, c=, h= or bh=.
type dkimSig struct {
	d, s, a, b, i, c, h, bh string
	l                       int64  // -1: no l= tag
	lBad                    bool   // l= present but not a number
	field                   string // the whole field, for l= verification
}

// dkimReaders are the readers VerifyDKIM reads a message through, reused
// across messages (16 KiB each).
var dkimReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

// onlyReader is just an io.Reader, whatever the reader inside can do.
type onlyReader struct{ io.Reader }

// VerifyDKIM verifies the DKIM signatures of a message (RFC 6376, RFC 8463
// ed25519) through r and returns one result per DKIM-Signature field, top to
// bottom. rsa-sha1 and RSA keys under 1024 bits never pass (RFC 8301). The
// error is non-nil only when the message cannot be read; every problem with a
// signature or its key is a result.
func VerifyDKIM(ctx context.Context, r Resolver, msg io.Reader, opts DKIMOptions) ([]DKIMResult, error) {
	maxSigs := opts.MaxSignatures
	if maxSigs <= 0 {
		maxSigs = defaultDKIMMaxSignatures
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = defaultDKIMTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	br := dkimReaders.Get().(*bufio.Reader)
	br.Reset(msg)
	defer func() { br.Reset(nil); dkimReaders.Put(br) }()
	rawHeader, fields, err := dkimReadHeader(br, maxDKIMHeaderBytes)
	if err != nil {
		return nil, fmt.Errorf("dkim: read header: %w", err)
	}
	var sigs []dkimSig
	for _, f := range fields {
		name, value, _ := strings.Cut(f, ":")
		if strings.EqualFold(strings.TrimSpace(name), "DKIM-Signature") {
			sig := parseDKIMSig(value)
			sig.field = f
			sigs = append(sigs, sig)
		}
	}
	if len(sigs) == 0 {
		return nil, nil
	}
	// Signatures over the cap are reported unverified, but only a few: a
	// hostile message with thousands of them must not blow up the policy
	// input or our Authentication-Results.
	total := len(sigs)
	if total > maxSigs+dkimMaxUnverifiedReported {
		sigs = sigs[:maxSigs+dkimMaxUnverifiedReported]
	}

	// Signatures with l= get their own canonical body hash (go-msgauth
	// refuses them; see dkim_length.go).
	var body io.Reader = br
	canon := make([]*dkimCanonBody, len(sigs))
	var canonW []io.Writer
	for i, s := range sigs {
		if s.l >= 0 && i < maxSigs {
			canon[i] = newDKIMCanonBody(s.c, sha256.New(), s.l)
			canonW = append(canonW, canon[i])
		}
	}
	if len(canonW) > 0 {
		body = io.TeeReader(br, io.MultiWriter(canonW...))
	}

	keys := &dkimKeyRecorder{r: r, ctx: ctx, txt: make(map[string][]string)}
	// onlyReader hides MultiReader's WriteTo, which allocates a 32 KiB
	// buffer per call: go-msgauth's bufio.Reader then copies with its own.
	verifs, err := dkim.VerifyWithOptions(onlyReader{io.MultiReader(bytes.NewReader(rawHeader), body)}, &dkim.VerifyOptions{
		LookupTXT:        keys.dkimLookupTXT,
		MaxVerifications: maxSigs,
	})
	if err != nil && !errors.Is(err, dkim.ErrTooManySignatures) {
		return nil, fmt.Errorf("dkim: read message: %w", err)
	}
	// go-msgauth may stop reading early (it does not hash the body for
	// signatures it rejects before the body hash): read the rest, so that
	// an unreadable message is always an error and l= lengths are complete.
	var rest io.Writer = io.Discard
	if len(canonW) > 0 {
		rest = io.MultiWriter(canonW...)
	}
	if _, err := io.Copy(rest, br); err != nil {
		return nil, fmt.Errorf("dkim: read body: %w", err)
	}
	for _, c := range canon {
		if c != nil {
			c.Close()
		}
	}

	results := make([]DKIMResult, len(sigs))
	for i, s := range sigs {
		res := DKIMResult{
			Domain:     strings.ToLower(s.d),
			Selector:   s.s,
			Algorithm:  strings.ToLower(s.a),
			HeaderB:    s.b[:min(len(s.b), dkimHeaderBLen)],
			Identifier: s.i,
			BodyLength: s.l >= 0 || s.lBad,
		}
		if canon[i] != nil {
			res.UnsignedContent = canon[i].written > s.l
		}
		if i >= len(verifs) {
			// go-msgauth stopped at MaxVerifications.
			res.Result = "policy"
			res.Reason = fmt.Sprintf("not verified: more than %d signatures", maxSigs)
			if i == len(sigs)-1 && total > len(sigs) {
				res.Reason += fmt.Sprintf(" (%d more not reported)", total-len(sigs))
			}
			results[i] = res
			continue
		}
		res.Result, res.Reason = classifyDKIM(verifs[i].Err)
		if res.BodyLength && res.Result == "fail" && dkimBodyLengthRefusal(verifs[i].Err) {
			// go-msgauth checked everything but the hashes and refused
			// l=: finish the verification ourselves.
			res.Result, res.Reason = dkimLengthVerify(s, s.field, fields, canon[i], keys)
		}
		if res.Result == "pass" {
			res.Result, res.Reason = keys.enforce(s)
		}
		results[i] = res
	}
	return results, nil
}

// classifyDKIM maps a go-msgauth verification error to an RFC 8601 word.
func classifyDKIM(err error) (result, reason string) {
	switch {
	case err == nil:
		return "pass", ""
	case dkim.IsTempFail(err):
		return "temperror", trimDKIMPrefix(err)
	case dkim.IsPermFail(err):
		return "permerror", trimDKIMPrefix(err)
	default:
		return "fail", trimDKIMPrefix(err)
	}
}

func trimDKIMPrefix(err error) string {
	return strings.TrimPrefix(err.Error(), "dkim: ")
}

func dkimBodyLengthRefusal(err error) bool {
	return err != nil && strings.Contains(err.Error(), "insecure body length tag")
}

// parseDKIMSig reads the tags we report from a DKIM-Signature value
// (RFC 6376 3.2 tag-list; FWS inside values is removed).
func parseDKIMSig(v string) dkimSig {
	s := dkimSig{l: -1}
	for part := range strings.SplitSeq(v, ";") {
		k, val, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		k = strings.TrimSpace(k)
		val = dkimStripFWS(val)
		switch k {
		case "d":
			s.d = val
		case "s":
			s.s = val
		case "a":
			s.a = val
		case "b":
			s.b = val
		case "i":
			s.i = val
		case "c":
			s.c = val
		case "h":
			s.h = val
		case "bh":
			s.bh = val
		case "l":
			n, err := strconv.ParseInt(val, 10, 64)
			if err != nil || n < 0 {
				s.lBad = true
			} else {
				s.l = n
			}
		}
	}
	// Bound what we copy into results and logs from hostile headers.
	s.d, s.s, s.a, s.i = dkimClip(s.d, 255), dkimClip(s.s, 255), dkimClip(s.a, 32), dkimClip(s.i, 320)
	return s
}

func dkimStripFWS(s string) string {
	return strings.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\r', '\n':
			return -1
		}
		return r
	}, s)
}

func dkimClip(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// dkimKeyRecorder adapts a Resolver to go-msgauth's LookupTXT and remembers the
// key records it fetched, so that key sizes can be checked afterwards.
type dkimKeyRecorder struct {
	r   Resolver
	ctx context.Context

	mu  sync.Mutex // go-msgauth verifies signatures in parallel
	txt map[string][]string
}

func (k *dkimKeyRecorder) dkimLookupTXT(name string) ([]string, error) {
	txts, err := dkimLookupTXT(k.ctx, k.r, name)
	if err == nil {
		k.mu.Lock()
		k.txt[strings.ToLower(strings.TrimSuffix(name, "."))] = txts
		k.mu.Unlock()
	}
	return txts, err
}

// enforce re-checks a signature go-msgauth passed against RFC 8301, from the
// key record itself: no SHA-1, no RSA key under 1024 bits.
func (k *dkimKeyRecorder) enforce(s dkimSig) (result, reason string) {
	algo := strings.ToLower(s.a)
	switch algo {
	case "rsa-sha256", "ed25519-sha256":
	default:
		return "permerror", fmt.Sprintf("algorithm %q not accepted (RFC 8301)", s.a)
	}
	if algo != "rsa-sha256" {
		return "pass", ""
	}
	name := strings.ToLower(s.s + "._domainkey." + strings.TrimSuffix(s.d, "."))
	k.mu.Lock()
	txts := k.txt[name]
	k.mu.Unlock()
	if len(txts) != 1 {
		return "permerror", "key record not found again"
	}
	bits, err := dkimRSAKeyBits(txts[0])
	if err != nil {
		return "permerror", err.Error()
	}
	if bits < dkimMinRSABits {
		return "permerror", fmt.Sprintf("RSA key of %d bits is too short (RFC 8301 3.2)", bits)
	}
	return "pass", ""
}

// dkimRSAKeyBits returns the modulus size of the RSA key in a DKIM key record
// (RFC 6376 3.6.1 p=, SubjectPublicKeyInfo or, per erratum 3017, RSAPublicKey).
func dkimRSAKeyBits(record string) (int, error) {
	var p string
	found := false
	for part := range strings.SplitSeq(record, ";") {
		k, v, ok := strings.Cut(part, "=")
		if ok && strings.TrimSpace(k) == "p" {
			p, found = dkimStripFWS(v), true
		}
	}
	if !found || p == "" {
		return 0, errors.New("key record has no p=")
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return 0, fmt.Errorf("key record p=: %v", err)
	}
	if pub, err := x509.ParsePKIXPublicKey(der); err == nil {
		if rk, ok := pub.(*rsa.PublicKey); ok {
			return rk.N.BitLen(), nil
		}
		return 0, errors.New("key record: not an RSA key")
	}
	rk, err := x509.ParsePKCS1PublicKey(der)
	if err != nil {
		return 0, fmt.Errorf("key record p=: %v", err)
	}
	return rk.N.BitLen(), nil
}

// dkimLookupTXT queries r under ctx and returns the error as a *net.DNSError,
// unwrapped: go-msgauth tells temperror from permerror by type-asserting
// net.Error (Temporary) on it. Names that cannot be valid DNS names are not
// sent at all (hostile d= / s= values) and read as "not found".
func dkimLookupTXT(ctx context.Context, r Resolver, name string) ([]string, error) {
	if !dkimValidName(name) {
		return nil, &net.DNSError{Err: "invalid name", Name: dkimClip(name, 300), IsNotFound: true}
	}
	txts, err := r.LookupTXT(ctx, name)
	if err != nil {
		return nil, dkimDNSError(ctx, name, err)
	}
	return txts, nil
}

// dkimDNSError keeps *net.DNSError as is and turns anything else (a context
// error, an unexpected resolver error) into a temporary one: an error we do
// not understand must never read as "no record".
func dkimDNSError(ctx context.Context, name string, err error) error {
	if de, ok := err.(*net.DNSError); ok {
		return de
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de
	}
	timeout := errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil
	return &net.DNSError{Err: err.Error(), Name: name, IsTimeout: timeout, IsTemporary: true}
}

// dkimValidName accepts names a DNS query can carry: 1-253 octets, labels of
// 1-63 printable ASCII octets other than space.
func dkimValidName(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || len(name) > fromMaxDomainLen {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if len(label) == 0 || len(label) > fromMaxLabelLen {
			return false
		}
		for i := 0; i < len(label); i++ {
			if label[i] <= ' ' || label[i] >= 0x7f {
				return false
			}
		}
	}
	return true
}

// dkimReadHeader reads the header section up to and including the empty
// line and returns it raw, plus the fields with continuation lines joined. It
// splits lines exactly as go-msgauth does (textproto: strip "\n", then one
// "\r"), so that our list of DKIM-Signature fields matches its list index by
// index. A message that ends before the empty line gets one, so that a
// header-only message is still a message.
func dkimReadHeader(br *bufio.Reader, limit int) ([]byte, []string, error) {
	var raw bytes.Buffer
	var fields []string
	var line []byte
	for {
		line = line[:0]
		var err error
		for {
			var piece []byte
			piece, err = br.ReadSlice('\n')
			if raw.Len()+len(line)+len(piece) > limit {
				return nil, nil, fmt.Errorf("header section larger than %d bytes", limit)
			}
			line = append(line, piece...)
			if err != bufio.ErrBufferFull {
				break
			}
		}
		if err != nil && err != io.EOF {
			return nil, nil, err
		}
		if len(line) == 0 { // EOF right after the last field
			raw.WriteString("\r\n")
			return raw.Bytes(), fields, nil
		}
		content := bytes.TrimSuffix(line, []byte("\n"))
		if len(content) < len(line) {
			content = bytes.TrimSuffix(content, []byte("\r"))
		}
		raw.Write(line)
		if len(content) == 0 {
			return raw.Bytes(), fields, nil
		}
		if len(fields) > 0 && (content[0] == ' ' || content[0] == '\t') {
			fields[len(fields)-1] += "\r\n" + string(content)
		} else {
			fields = append(fields, string(content))
		}
		if err == io.EOF {
			if !bytes.HasSuffix(line, []byte("\n")) {
				raw.WriteString("\r\n")
			}
			raw.WriteString("\r\n")
			return raw.Bytes(), fields, nil
		}
	}
}
