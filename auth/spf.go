package auth

// SPF: the Sender Policy Framework evaluator, check_host() of RFC 7208, over
// the package Resolver. Files spf*.go.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// SPF result words (RFC 7208 2.6).
const (
	SPFNone      = "none"
	SPFNeutral   = "neutral"
	SPFPass      = "pass"
	SPFFail      = "fail"
	SPFSoftfail  = "softfail"
	SPFTemperror = "temperror"
	SPFPermerror = "permerror"
)

// Fixed limits (RFC 7208 4.6.4).
const (
	// SPFMaxLookups is the limit on DNS-querying terms (include, a, mx, ptr,
	// exists, redirect, and the %{p} macro) per check.
	SPFMaxLookups = 10
	// SPFMaxVoidLookups is the limit on lookups answering NXDOMAIN or no data.
	SPFMaxVoidLookups = 2
	// SPFMaxNames is the limit on MX names (more is a permerror) and PTR
	// names (the rest are ignored) looked up per term.
	SPFMaxNames = 10
	// SPFDefaultTimeout is the whole-check deadline when SPFOptions leaves
	// it zero (RFC 7208 4.6.4 suggests at least 20 seconds).
	SPFDefaultTimeout = 20 * time.Second
)

// spfMaxSenderLen bounds the MAIL FROM we accept (RFC 5321 4.5.3.1.3 allows
// a 256-byte path; leave room for sloppy clients).
const spfMaxSenderLen = 1024

// SPFResult is the outcome of one SPF check.
type SPFResult struct {
	Result      string `json:"result"`                // none, neutral, pass, fail, softfail, temperror, permerror (RFC 7208 2.6)
	Domain      string `json:"domain"`                // the domain whose policy was evaluated (lower case)
	Identity    string `json:"identity"`              // "mailfrom" or "helo"
	Mechanism   string `json:"mechanism,omitempty"`   // the term that matched, as written, e.g. "ip4:192.0.2.0/24"
	Explanation string `json:"explanation,omitempty"` // exp= text on fail (RFC 7208 6.2)
	Reason      string `json:"reason,omitempty"`      // short diagnostic for errors and none
	Lookups     int    `json:"lookups"`               // DNS-querying terms counted against the limit of 10
}

// SPFOptions tunes CheckSPF.
type SPFOptions struct {
	// Timeout is the whole-check deadline; zero means SPFDefaultTimeout.
	Timeout time.Duration
	// ReceiverName is the %{r} macro value (explanations only); empty
	// means "unknown".
	ReceiverName string
	// Now is the %{t} macro clock; nil means time.Now.
	Now func() time.Time
}

// CheckSPF evaluates the SPF policy for a message from ip. The identity is
// mailFrom (the reverse-path without angle brackets) or, when it is null,
// postmaster@helo (RFC 7208 2.4). It never returns an error: DNS trouble is
// temperror, a broken policy permerror, each with Reason filled in. r's errors
// must be unwrapped *net.DNSError (see Resolver).
func CheckSPF(ctx context.Context, r Resolver, ip netip.Addr, helo, mailFrom string, opts SPFOptions) SPFResult {
	helo = strings.TrimSuffix(helo, ".")
	mailFrom = strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(mailFrom), "<"), ">")
	res := SPFResult{Identity: "mailfrom"}
	if mailFrom == "" {
		// RFC 7208 2.4: a null reverse-path checks postmaster@HELO.
		res.Identity = "helo"
		mailFrom = "postmaster@" + helo
	}
	if len(mailFrom) > spfMaxSenderLen {
		res.Result, res.Reason = SPFNone, "sender too long"
		return res
	}
	local, domain := "postmaster", mailFrom
	if at := strings.LastIndexByte(mailFrom, '@'); at >= 0 {
		domain = mailFrom[at+1:]
		if at > 0 {
			local = mailFrom[:at]
		}
	}
	// RFC 7208 4.3: an empty local-part is replaced by "postmaster".
	mailFrom = local + "@" + domain
	domain = strings.TrimSuffix(domain, ".")
	res.Domain = strings.ToLower(spfClipN(domain, 255))
	if !ip.IsValid() {
		res.Result, res.Reason = SPFPermerror, "no client IP address"
		return res
	}
	if r == nil {
		res.Result, res.Reason = SPFTemperror, "no resolver"
		return res
	}
	// RFC 7208 4.3: a malformed or single-label domain gives none without
	// a lookup.
	if !spfValidDomain(domain) {
		res.Result, res.Reason = SPFNone, "invalid domain "+strconv.Quote(spfClip(domain))
		return res
	}

	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = SPFDefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := &spfChecker{
		ctx:      ctx,
		r:        r,
		ip:       ip.Unmap(), // RFC 7208 5: IPv4-mapped IPv6 is treated as IPv4
		sender:   mailFrom,
		local:    local,
		sdomain:  domain,
		helo:     helo,
		receiver: opts.ReceiverName,
		now:      opts.Now,
	}
	if c.receiver == "" {
		c.receiver = "unknown"
	}
	out := c.checkHost(domain, 0, true)
	// Mechanism and Reason hold record text (printable ASCII, checked by
	// the parser); bound them for logs and headers.
	res.Result, res.Mechanism, res.Explanation, res.Reason = out.result, spfClipN(out.mech, 255), out.exp, spfClipN(out.reason, 512)
	res.Lookups = c.lookups
	return res
}

// spfValidDomain reports whether name may be queried: at most 253 bytes,
// labels of 1 to 63 visible ASCII bytes, at least two labels, and not a
// domain literal (RFC 7208 4.3, RFC 1035 2.3.4).
func spfValidDomain(name string) bool {
	name = strings.TrimSuffix(name, ".")
	if name == "" || name[0] == '[' {
		return false
	}
	labels, ok := spfLabels(name)
	return ok && labels >= 2
}

// spfTargetOK reports whether an expanded target-name can be queried. RFC
// 7208 leaves invalid names from macro expansion undefined (4.8); like 4.3
// we treat them as non-existent: no match, no query, no void lookup.
func spfTargetOK(name string) bool {
	_, ok := spfLabels(name)
	return ok
}

// spfLabels counts the labels of name and checks the RFC 1035 2.3.4 sizes
// (name at most 253 bytes, labels 1 to 63) and that every byte is printable
// ASCII.
func spfLabels(name string) (int, bool) {
	if name == "" || len(name) > spfMaxDomainLen {
		return 0, false
	}
	labels, n := 1, 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if n == 0 {
				return 0, false
			}
			labels, n = labels+1, 0
		case c < 0x20 || c > 0x7e:
			return 0, false
		default:
			if n++; n > 63 {
				return 0, false
			}
		}
	}
	return labels, n > 0
}

// spfError ends the evaluation with temperror or permerror.
type spfError struct {
	result string
	reason string
}

func (e *spfError) Error() string { return e.result + ": " + e.reason }

func spfPerm(format string, a ...any) *spfError {
	return &spfError{SPFPermerror, fmt.Sprintf(format, a...)}
}

// spfOutcome is what one check_host() level returns.
type spfOutcome struct {
	result, mech, exp, reason string
}

// spfChecker holds the state of one CheckSPF call.
type spfChecker struct {
	ctx      context.Context
	r        Resolver
	ip       netip.Addr
	sender   string // <sender> after postmaster substitution
	local    string
	sdomain  string // domain of <sender>, the %{o} value
	helo     string
	receiver string
	now      func() time.Time

	lookups int // DNS-querying terms so far (RFC 7208 4.6.4)
	voids   int // void lookups so far (RFC 7208 4.6.4)

	pDone  bool
	pValue string
}

// spfMaxDepth bounds include/redirect nesting; the lookup limit already
// stops it at 10, this is a second guard.
const spfMaxDepth = SPFMaxLookups + 1

// checkHost is check_host(<ip>, <domain>, <sender>) (RFC 7208 4). wantExp
// is false inside include, whose explanation is never used (RFC 7208 6.2).
func (c *spfChecker) checkHost(domain string, depth int, wantExp bool) spfOutcome {
	if depth > spfMaxDepth {
		return spfOutcome{result: SPFPermerror, reason: "include/redirect nesting too deep"}
	}
	if !spfValidDomain(domain) {
		return spfOutcome{result: SPFNone, reason: "invalid domain " + strconv.Quote(spfClip(domain))}
	}
	// RFC 7208 4.4: the record is in TXT only.
	txts, err := c.r.LookupTXT(c.ctx, spfFQDN(domain))
	if err != nil {
		if spfNotFound(err) {
			return spfOutcome{result: SPFNone, reason: "no SPF record at " + domain}
		}
		return spfOutcome{result: SPFTemperror, reason: c.dnsReason("TXT", domain, err)}
	}
	// RFC 7208 4.5: keep records starting "v=spf1"; none is "none", more
	// than one is permerror.
	var rec string
	n := 0
	for _, t := range txts {
		if spfIsRecord(t) {
			rec = t
			n++
		}
	}
	switch {
	case n == 0:
		return spfOutcome{result: SPFNone, reason: "no SPF record at " + domain}
	case n > 1:
		return spfOutcome{result: SPFPermerror, reason: "multiple SPF records at " + domain}
	}
	parsed, err := spfParse(rec)
	if err != nil {
		return spfOutcome{result: SPFPermerror, reason: domain + ": " + err.Error()}
	}

	for i := range parsed.terms {
		t := &parsed.terms[i]
		if c.ctx.Err() != nil {
			// RFC 7208 4.6.4: a check that outlives its time limit is
			// temperror.
			return spfOutcome{result: SPFTemperror, reason: "SPF check deadline exceeded", mech: t.text}
		}
		ok, serr := c.match(t, domain, depth)
		if serr != nil {
			return spfOutcome{result: serr.result, reason: serr.reason, mech: t.text}
		}
		if !ok {
			continue
		}
		out := spfOutcome{result: spfQualifierResult(t.qual), mech: t.text}
		// RFC 7208 6.2: the explanation comes from the record whose
		// term produced fail.
		if out.result == SPFFail && wantExp && parsed.exp != nil {
			out.exp = c.explain(parsed.exp, domain)
		}
		return out
	}

	// RFC 7208 6.1: redirect applies only when no mechanism matched; the
	// target's result (and explanation) replaces ours.
	if parsed.redirect != nil {
		if serr := c.count(); serr != nil {
			return spfOutcome{result: serr.result, reason: serr.reason, mech: "redirect"}
		}
		target, serr := c.expandDomain(parsed.redirect, domain)
		if serr != nil {
			return spfOutcome{result: serr.result, reason: serr.reason, mech: "redirect"}
		}
		out := c.checkHost(target, depth+1, wantExp)
		if out.result == SPFNone {
			// RFC 7208 6.1: a redirect to a domain without a record
			// is permerror.
			return spfOutcome{result: SPFPermerror, reason: "redirect: " + out.reason, mech: "redirect=" + target}
		}
		return out
	}
	// RFC 7208 4.7: no match and no redirect is neutral.
	return spfOutcome{result: SPFNeutral}
}

func spfQualifierResult(q byte) string {
	switch q {
	case '-':
		return SPFFail
	case '~':
		return SPFSoftfail
	case '?':
		return SPFNeutral
	}
	return SPFPass
}

// count charges one DNS-querying term (RFC 7208 4.6.4).
func (c *spfChecker) count() *spfError {
	c.lookups++
	if c.lookups > SPFMaxLookups {
		return spfPerm("too many DNS lookups (limit %d)", SPFMaxLookups)
	}
	return nil
}

// void charges one void lookup (RFC 7208 4.6.4).
func (c *spfChecker) void() *spfError {
	c.voids++
	if c.voids > SPFMaxVoidLookups {
		return spfPerm("too many void DNS lookups (limit %d)", SPFMaxVoidLookups)
	}
	return nil
}

// expandDomain expands a domain-spec for a query (RFC 7208 4.8, 7.3).
func (c *spfChecker) expandDomain(m spfMacro, domain string) (string, *spfError) {
	s, err := m.expand(c, domain, true)
	if err != nil {
		var se *spfError
		if errors.As(err, &se) {
			return "", se
		}
		return "", spfPerm("macro expansion: %v", err)
	}
	return s, nil
}

// target returns the target-name of a term: its domain-spec expanded, or
// the current domain (RFC 7208 4.8).
func (c *spfChecker) target(t *spfTerm, domain string) (string, *spfError) {
	if t.domain == nil {
		return domain, nil
	}
	return c.expandDomain(t.domain, domain)
}

// match evaluates one mechanism (RFC 7208 5).
func (c *spfChecker) match(t *spfTerm, domain string, depth int) (bool, *spfError) {
	switch t.kind {
	case spfMechAll:
		return true, nil
	case spfMechIP4, spfMechIP6:
		// RFC 7208 5.6: an IPv4 client never matches ip6 and vice versa.
		return t.net.Addr().Is4() == c.ip.Is4() && t.net.Contains(c.ip), nil
	}
	// Every other mechanism queries DNS (RFC 7208 4.6.4).
	if serr := c.count(); serr != nil {
		return false, serr
	}
	target, serr := c.target(t, domain)
	if serr != nil {
		return false, serr
	}
	switch t.kind {
	case spfMechInclude:
		// RFC 7208 5.2: pass matches; fail, softfail, neutral do not;
		// temperror propagates; permerror and none are permerror.
		out := c.checkHost(target, depth+1, false)
		switch out.result {
		case SPFPass:
			return true, nil
		case SPFFail, SPFSoftfail, SPFNeutral:
			return false, nil
		}
		reason := out.reason
		if out.mech == "" {
			// A record-level problem of the included domain: name it.
			// Deeper errors already name their term.
			reason = "include:" + target + ": " + reason
		}
		if out.result == SPFTemperror {
			return false, &spfError{SPFTemperror, reason}
		}
		return false, &spfError{SPFPermerror, reason}
	case spfMechA:
		return c.matchA(target, t.cidr4, t.cidr6, true)
	case spfMechMX:
		return c.matchMX(target, t.cidr4, t.cidr6)
	case spfMechPTR:
		return c.matchPTR(target)
	case spfMechExists:
		// RFC 7208 5.7: an A query whatever the client's address family.
		if !spfTargetOK(target) {
			return false, nil
		}
		addrs, err := c.r.LookupNetIP(c.ctx, "ip4", spfFQDN(target))
		if err != nil && !spfNotFound(err) {
			return false, &spfError{SPFTemperror, c.dnsReason("A", target, err)}
		}
		if len(addrs) == 0 {
			return false, c.void()
		}
		return true, nil
	}
	return false, spfPerm("internal: unknown mechanism")
}

// matchA looks up the client's address family at name and tests each
// address against the CIDR length (RFC 7208 5.3). countVoid is false for the
// per-host lookups of mx, whose void answers are not charged.
func (c *spfChecker) matchA(name string, cidr4, cidr6 int, countVoid bool) (bool, *spfError) {
	if !spfTargetOK(name) {
		return false, nil
	}
	network, bits, qtype := "ip4", cidr4, "A"
	if c.ip.Is6() {
		network, bits, qtype = "ip6", cidr6, "AAAA"
	}
	addrs, err := c.r.LookupNetIP(c.ctx, network, spfFQDN(name))
	if err != nil && !spfNotFound(err) {
		return false, &spfError{SPFTemperror, c.dnsReason(qtype, name, err)}
	}
	if len(addrs) == 0 {
		if countVoid {
			return false, c.void()
		}
		return false, nil
	}
	for _, a := range addrs {
		if c.ip.Is4() {
			a = a.Unmap()
		}
		if a.BitLen() != c.ip.BitLen() {
			continue
		}
		if p, err := a.Prefix(bits); err == nil && p.Contains(c.ip) {
			return true, nil
		}
	}
	return false, nil
}

// matchMX tests the addresses of every MX host of name (RFC 7208 5.4).
func (c *spfChecker) matchMX(name string, cidr4, cidr6 int) (bool, *spfError) {
	if !spfTargetOK(name) {
		return false, nil
	}
	mxs, err := c.r.LookupMX(c.ctx, spfFQDN(name))
	if err != nil && !spfNotFound(err) {
		return false, &spfError{SPFTemperror, c.dnsReason("MX", name, err)}
	}
	if len(mxs) == 0 {
		return false, c.void()
	}
	// RFC 7208 4.6.4: more than 10 MX names is permerror.
	if len(mxs) > SPFMaxNames {
		return false, spfPerm("mx:%s has more than %d MX records", name, SPFMaxNames)
	}
	for _, mx := range mxs {
		host := strings.TrimSuffix(mx.Host, ".")
		if host == "" {
			continue // null MX (RFC 7505): no mail host
		}
		ok, serr := c.matchA(host, cidr4, cidr6, false)
		if serr != nil || ok {
			return ok, serr
		}
	}
	return false, nil
}

// validatedNames returns the validated domain names of the client address
// (RFC 7208 5.5): PTR names (the first 10) whose forward lookup includes the
// address. keep filters names before their forward lookup. A DNS error on
// the PTR query means no names; an error on a forward lookup skips the name.
func (c *spfChecker) validatedNames(keep func(string) bool) (names []string, void bool) {
	ptrs, err := c.r.LookupAddr(c.ctx, c.ip.String())
	if err != nil || len(ptrs) == 0 {
		return nil, err == nil || spfNotFound(err)
	}
	if len(ptrs) > SPFMaxNames {
		// RFC 7208 4.6.4: names past the first 10 are ignored.
		ptrs = ptrs[:SPFMaxNames]
	}
	network := "ip4"
	if c.ip.Is6() {
		network = "ip6"
	}
	for _, p := range ptrs {
		name := strings.TrimSuffix(p, ".")
		if !spfTargetOK(name) || (keep != nil && !keep(name)) {
			continue
		}
		addrs, err := c.r.LookupNetIP(c.ctx, network, spfFQDN(name))
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if c.ip.Is4() {
				a = a.Unmap()
			}
			if a == c.ip {
				names = append(names, name)
				break
			}
		}
	}
	return names, false
}

// spfSubdomainOf reports whether name equals domain or lies under it,
// ignoring case.
func spfSubdomainOf(name, domain string) bool {
	if len(name) < len(domain) {
		return false
	}
	if len(name) == len(domain) {
		return strings.EqualFold(name, domain)
	}
	return name[len(name)-len(domain)-1] == '.' && strings.EqualFold(name[len(name)-len(domain):], domain)
}

// matchPTR implements the (discouraged) ptr mechanism (RFC 7208 5.5).
func (c *spfChecker) matchPTR(target string) (bool, *spfError) {
	if !spfTargetOK(target) {
		return false, nil
	}
	names, void := c.validatedNames(func(n string) bool { return spfSubdomainOf(n, target) })
	if void {
		return false, c.void()
	}
	return len(names) > 0, nil
}

// pMacro computes %{p} once per check (RFC 7208 7.3). Its PTR query counts
// against the limit of 10 (RFC 7208 4.6.4).
func (c *spfChecker) pMacro(domain string) (string, error) {
	if c.pDone {
		return c.pValue, nil
	}
	if serr := c.count(); serr != nil {
		return "", serr
	}
	c.pDone = true
	c.pValue = "unknown"
	names, _ := c.validatedNames(nil)
	// Prefer <domain>, then a subdomain of it, then any validated name.
	best := -1
	for i, n := range names {
		switch {
		case strings.EqualFold(n, domain):
			c.pValue = n
			return n, nil
		case best < 0 && spfSubdomainOf(n, domain):
			best = i
		}
	}
	if best < 0 && len(names) > 0 {
		best = 0
	}
	if best >= 0 {
		c.pValue = names[best]
	}
	return c.pValue, nil
}

// macroValue returns the value of one macro letter (RFC 7208 7.2).
func (c *spfChecker) macroValue(letter byte, domain string) (string, error) {
	switch letter {
	case 's':
		return c.sender, nil
	case 'l':
		return c.local, nil
	case 'o':
		return c.sdomain, nil
	case 'd':
		return domain, nil
	case 'h':
		return c.helo, nil
	case 'i':
		return spfDottedIP(c.ip), nil
	case 'v':
		if c.ip.Is4() {
			return "in-addr", nil
		}
		return "ip6", nil
	case 'p':
		return c.pMacro(domain)
	case 'c':
		return c.ip.String(), nil
	case 'r':
		return c.receiver, nil
	case 't':
		now := time.Now
		if c.now != nil {
			now = c.now
		}
		return strconv.FormatInt(now().Unix(), 10), nil
	}
	return "", errSPFMacroSyntax
}

// spfDottedIP is the %{i} value: dotted quad for IPv4, dot-separated nibbles
// for IPv6 (RFC 7208 7.3). Nibbles are upper case as in the OpenSPF suite;
// DNS matching ignores case.
func spfDottedIP(ip netip.Addr) string {
	if ip.Is4() {
		return ip.String()
	}
	const hex = "0123456789ABCDEF"
	b := ip.As16()
	out := make([]byte, 0, 63)
	for i, x := range b {
		if i > 0 {
			out = append(out, '.')
		}
		out = append(out, hex[x>>4], '.', hex[x&15])
	}
	return string(out)
}

// explain computes the explanation for a fail (RFC 7208 6.2). Any problem
// (expansion, DNS, not exactly one record, bad syntax, non-ASCII) means no
// explanation. Its lookups are not counted against the limits.
func (c *spfChecker) explain(m spfMacro, domain string) string {
	// RFC 7208 6.2: the explanation's lookups (exp=, %{p}) are not
	// charged; run with fresh counters and put the real ones back.
	saveL, saveV := c.lookups, c.voids
	c.lookups, c.voids = 0, 0
	defer func() { c.lookups, c.voids = saveL, saveV }()
	name, serr := c.expandDomain(m, domain)
	if serr != nil || !spfTargetOK(name) {
		return ""
	}
	txts, err := c.r.LookupTXT(c.ctx, spfFQDN(name))
	if err != nil || len(txts) != 1 {
		return ""
	}
	if len(txts[0]) > spfMaxRecordLen {
		return ""
	}
	for i := 0; i < len(txts[0]); i++ {
		if b := txts[0][i]; b < 0x20 || b > 0x7e {
			return ""
		}
	}
	em, _, err := spfMacroString(txts[0], true)
	if err != nil {
		return ""
	}
	text, err := em.expand(c, domain, false)
	if err != nil {
		return ""
	}
	// Macros such as %{h} and %{l} carry client-chosen bytes; the text may
	// end up in an SMTP reply or a header, so it must stay printable ASCII.
	for i := 0; i < len(text); i++ {
		if b := text[i]; b < 0x20 || b > 0x7e {
			return ""
		}
	}
	return text
}

// spfFQDN makes name absolute so no resolver applies a search list.
func spfFQDN(name string) string {
	if strings.HasSuffix(name, ".") {
		return name
	}
	return name + "."
}

// spfNotFound reports NXDOMAIN or NODATA, which RFC 7208 4.6.4 calls void.
func spfNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound
}

// dnsReason describes a lookup failure for SPFResult.Reason.
func (c *spfChecker) dnsReason(qtype, name string, err error) string {
	if c.ctx.Err() != nil {
		return fmt.Sprintf("SPF check deadline exceeded looking up %s %s", qtype, spfClip(name))
	}
	var de *net.DNSError
	if errors.As(err, &de) && de.IsTimeout {
		return fmt.Sprintf("DNS timeout looking up %s %s", qtype, spfClip(name))
	}
	return fmt.Sprintf("DNS error looking up %s %s", qtype, spfClip(name))
}
