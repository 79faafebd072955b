package auth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
)

// go-msgauth refuses every signature with a body length tag (l=). RFC 6376
// allows them; the danger is content appended after the signed length
// (RFC 6376 8.2), which DKIMResult.UnsignedContent reports and DMARC does not
// count. So for the signatures go-msgauth refused only because of l=, after it
// had already checked their tags, key record, algorithms and canonicalization
// names, we finish the job here: the body hash over the first l canonical
// octets, then the header hash and the signature. The header half is the same
// computation go-msgauth does; TestDKIMLengthVerifierAgrees runs it on
// signatures without l= and requires the same verdicts as go-msgauth.

// dkimLengthVerify verifies signature s (a DKIM-Signature field, sigField,
// among the header fields) whose canonical body went through body.
func dkimLengthVerify(s dkimSig, sigField string, fields []string, body *dkimCanonBody, keys *dkimKeyRecorder) (result, reason string) {
	if s.lBad {
		return "permerror", "malformed l= tag"
	}
	if body.written < s.l {
		// RFC 6376 3.5: the body is shorter than the length it claims.
		return "fail", "l= is longer than the body"
	}
	bh, err := base64.StdEncoding.DecodeString(s.bh)
	if err != nil {
		return "permerror", "malformed body hash"
	}
	if subtle.ConstantTimeCompare(body.h.Sum(nil), bh) != 1 {
		return "fail", "body hash did not verify"
	}
	return dkimHeaderVerify(s, sigField, fields, keys)
}

// dkimHeaderVerify checks the signature over the header fields (RFC 6376
// 3.7, 5.4.2): the fields named in h=, each taken bottom-up, canonicalized,
// then the DKIM-Signature field itself with an empty b= value.
func dkimHeaderVerify(s dkimSig, sigField string, fields []string, keys *dkimKeyRecorder) (result, reason string) {
	if strings.ToLower(s.a) != "rsa-sha256" && strings.ToLower(s.a) != "ed25519-sha256" {
		return "permerror", "unsupported algorithm"
	}
	relaxed := false
	switch hc, _, _ := strings.Cut(strings.ToLower(dkimStripFWS(s.c)), "/"); hc {
	case "", "simple":
	case "relaxed":
		relaxed = true
	default:
		return "permerror", "unsupported header canonicalization"
	}
	canon := func(f string) string {
		if !relaxed {
			return f
		}
		k, v, _ := strings.Cut(f, ":")
		v = strings.Join(strings.FieldsFunc(v, func(r rune) bool { return r == ' ' || r == '\t' || r == '\r' || r == '\n' }), " ")
		return strings.ToLower(strings.TrimSpace(k)) + ":" + v
	}

	h := sha256.New()
	picked := make(map[string]int)
	for name := range strings.SplitSeq(s.h, ":") {
		name = strings.ToLower(dkimStripFWS(name))
		skip := picked[name]
		for i := len(fields) - 1; i >= 0; i-- {
			k, _, _ := strings.Cut(fields[i], ":")
			if !strings.EqualFold(strings.TrimSpace(k), name) {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			picked[name]++
			h.Write([]byte(canon(fields[i]) + "\r\n"))
			break
		}
		// A name with no (more) field contributes nothing (RFC 6376 5.4.2).
	}
	h.Write([]byte(canon(dkimEmptyB(sigField))))
	sum := h.Sum(nil)

	sig, err := base64.StdEncoding.DecodeString(s.b)
	if err != nil {
		return "permerror", "malformed signature"
	}
	pub, err := keys.publicKey(s)
	if err != nil {
		return "permerror", err.Error()
	}
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if !strings.HasPrefix(strings.ToLower(s.a), "rsa-") {
			return "permerror", "inappropriate key algorithm"
		}
		if rsa.VerifyPKCS1v15(k, crypto.SHA256, sum, sig) != nil {
			return "fail", "signature did not verify"
		}
	case ed25519.PublicKey:
		if !strings.HasPrefix(strings.ToLower(s.a), "ed25519-") {
			return "permerror", "inappropriate key algorithm"
		}
		// RFC 8463 3: Ed25519 signs the SHA-256 hash.
		if !ed25519.Verify(k, sum, sig) {
			return "fail", "signature did not verify"
		}
	default:
		return "permerror", "unsupported key type"
	}
	return "pass", ""
}

// dkimEmptyB returns a DKIM-Signature field with the value of its b= tag
// deleted, surrounding whitespace included (RFC 6376 3.7), and nothing else
// changed.
func dkimEmptyB(field string) string {
	name, value, ok := strings.Cut(field, ":")
	if !ok {
		return field
	}
	parts := strings.Split(value, ";")
	for i, p := range parts {
		k, _, found := strings.Cut(p, "=")
		if found && strings.TrimSpace(k) == "b" {
			parts[i] = k + "="
		}
	}
	return name + ":" + strings.Join(parts, ";")
}

// publicKey parses the key record fetched for s (RFC 6376 3.6.1: k=rsa with
// SubjectPublicKeyInfo or RSAPublicKey, RFC 8463 k=ed25519 raw 32 octets).
func (k *dkimKeyRecorder) publicKey(s dkimSig) (crypto.PublicKey, error) {
	name := strings.ToLower(s.s + "._domainkey." + strings.TrimSuffix(s.d, "."))
	k.mu.Lock()
	txts := k.txt[name]
	k.mu.Unlock()
	if len(txts) != 1 {
		return nil, errors.New("no single key record")
	}
	var p, kt string
	foundP := false
	for part := range strings.SplitSeq(txts[0], ";") {
		tag, v, ok := strings.Cut(part, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(tag) {
		case "p":
			p, foundP = dkimStripFWS(v), true
		case "k":
			kt = strings.TrimSpace(v)
		}
	}
	if !foundP || p == "" {
		return nil, errors.New("key revoked or missing")
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, errors.New("key syntax error")
	}
	switch kt {
	case "", "rsa":
		if pub, err := x509.ParsePKIXPublicKey(der); err == nil {
			if rk, ok := pub.(*rsa.PublicKey); ok {
				return rk, nil
			}
			return nil, errors.New("not an RSA key")
		}
		rk, err := x509.ParsePKCS1PublicKey(der)
		if err != nil {
			return nil, errors.New("key syntax error")
		}
		return rk, nil
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key size")
		}
		return ed25519.PublicKey(der), nil
	}
	return nil, errors.New("unsupported key type")
}
