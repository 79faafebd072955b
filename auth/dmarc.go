package auth

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// DMARCResult is the DMARC verdict for a message (RFC 9989). Its JSON form is
// part of the policy input (input.auth.dmarc).
type DMARCResult struct {
	// Result: pass, fail, none (no policy record, so DMARC does not apply),
	// temperror (DNS trouble anywhere in the chain: never read as "none"),
	// permerror (unusable record, or no usable From domain).
	Result string `json:"result"`
	// Policy is the Domain Owner Assessment Policy that applies to this
	// message: p= at the From domain; sp= (existing) or np= (non-existent
	// From domain) when the record was found at the organizational or public
	// suffix domain, falling back to p=. "" when Result is none, temperror or
	// permerror. It is a fact, not an action: Testing tells whether the
	// owner asked for it to be applied.
	Policy       string `json:"policy"`
	Domain       string `json:"domain"`        // RFC5322.From domain
	PolicyDomain string `json:"policy_domain"` // where the record was found
	OrgDomain    string `json:"org_domain,omitempty"`
	// SPFAligned / DKIMAligned: the mechanism passed with an identifier
	// aligned with the From domain (what counts towards a DMARC pass).
	SPFAligned  bool `json:"spf_aligned"`
	DKIMAligned bool `json:"dkim_aligned"`
	// Testing is t=y: the owner asks receivers not to apply Policy
	// (RFC 9989, "t" tag).
	Testing bool   `json:"testing,omitempty"`
	Reason  string `json:"reason,omitempty"`
}

const (
	// dmarcMaxQueries: RFC 9989 DNS Tree Walk: the From domain, then at
	// most 7 labels and shorter, so no walk costs more than 8 queries.
	dmarcMaxQueries = 8
	dmarcMaxLabels  = 7
	// dmarcTimeout bounds one EvaluateDMARC (several walks and an existence
	// test), whatever the caller's context allows.
	dmarcTimeout = 15 * time.Second
	// maxDMARCRecordLen: bounds the parsing work on a hostile record.
	maxDMARCRecordLen = 4096
)

// dmarcRecord is a parsed DMARC policy record (RFC 9989 "General Record
// Format"). Tag values that are invalid are discarded in favour of defaults,
// except p, sp and np, whose invalidity the policy discovery rules handle.
type dmarcRecord struct {
	p, sp, np   string // none, quarantine, reject, or "" when absent
	badPolicy   string // first of p/sp/np whose value is invalid, or ""
	adkim, aspf byte   // 'r' or 's'
	psd         byte   // 'y', 'n' or 'u'
	testing     bool   // t=y
	validRUA    bool   // rua= holds at least one syntactically valid URI
	hasPct      bool   // historic pct= present (read and ignored)
}

// parseDMARCRecord parses one TXT string. ok is false when the string is not a
// DMARC record at all (it does not start with v=DMARC1), which the tree walk
// discards.
func parseDMARCRecord(txt string) (rec *dmarcRecord, ok bool) {
	if len(txt) > maxDMARCRecordLen {
		return nil, false
	}
	parts := strings.Split(txt, ";")
	// RFC 9989: "v" MUST be the first tag and its value MUST be exactly
	// "DMARC1" (case-sensitive); otherwise the record is ignored.
	k, v, found := strings.Cut(parts[0], "=")
	if !found || !strings.EqualFold(strings.Trim(k, " \t"), "v") || strings.Trim(v, " \t") != "DMARC1" {
		return nil, false
	}
	rec = &dmarcRecord{adkim: 'r', aspf: 'r', psd: 'u'}
	seen := make(map[string]bool, len(parts))
	for _, part := range parts[1:] {
		k, v, found := strings.Cut(part, "=")
		if !found {
			continue // syntax error in the remainder: ignored (RFC 9989)
		}
		tag := strings.ToLower(strings.Trim(k, " \t"))
		v = strings.Trim(v, " \t")
		if seen[tag] {
			continue // the first occurrence wins
		}
		seen[tag] = true
		lv := strings.ToLower(v)
		switch tag {
		case "p", "sp", "np":
			switch lv {
			case "none", "quarantine", "reject":
			default:
				if rec.badPolicy == "" {
					rec.badPolicy = tag
				}
				lv = ""
			}
			switch tag {
			case "p":
				rec.p = lv
			case "sp":
				rec.sp = lv
			case "np":
				rec.np = lv
			}
		case "adkim", "aspf":
			if lv == "r" || lv == "s" {
				if tag == "adkim" {
					rec.adkim = lv[0]
				} else {
					rec.aspf = lv[0]
				}
			}
		case "psd":
			if lv == "y" || lv == "n" || lv == "u" {
				rec.psd = lv[0]
			}
		case "t":
			if lv == "y" || lv == "n" {
				rec.testing = lv == "y"
			}
		case "rua":
			for u := range strings.SplitSeq(v, ",") {
				if validDMARCURI(strings.Trim(u, " \t")) {
					rec.validRUA = true
				}
			}
		case "pct":
			// RFC 9989 removed pct (historic in the tag registry): a record
			// carrying it is read as if it were absent. pct=0 does not turn
			// on testing; only t=y does.
			rec.hasPct = true
		default:
			// Unknown tags MUST be ignored (RFC 9989).
		}
	}
	return rec, true
}

func validDMARCURI(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme != "" && (u.Opaque != "" || u.Host != "" || u.Path != "")
}

// dmarcWalkHit is one valid DMARC record found by a tree walk.
type dmarcWalkHit struct {
	domain string
	rec    *dmarcRecord
}

// dmarcWalkResult is the outcome of one RFC 9989 DNS Tree Walk.
type dmarcWalkResult struct {
	hits    []dmarcWalkHit // longest domain first
	queries int
	// firstErr is the lookup error at the start domain (nil when records
	// came back): lets the existence test reuse it (RFC 8020).
	firstErr error
}

// dmarcWalk performs the RFC 9989 DNS Tree Walk from domain: query it; then, if
// it has 8 labels or more, jump to its last 7 labels, else drop one label; and
// so on up to the TLD. It stops at a single valid record carrying psd=n (at
// any step) or psd=y (after the first). Any temporary DNS failure aborts the
// walk with an error: a policy we could not see is not "no policy".
func dmarcWalk(ctx context.Context, r Resolver, domain string) (dmarcWalkResult, error) {
	var w dmarcWalkResult
	labels := strings.Split(domain, ".")
	for step := 0; len(labels) > 0 && w.queries < dmarcMaxQueries; step++ {
		target := strings.Join(labels, ".")
		rec, err := lookupDMARC(ctx, r, target)
		w.queries++
		if step == 0 {
			w.firstErr = err
		}
		if err != nil && !dmarcNotFound(err) {
			return w, fmt.Errorf("dmarc _dmarc.%s: %w", target, err)
		}
		if rec != nil {
			w.hits = append(w.hits, dmarcWalkHit{target, rec})
			if rec.psd == 'n' || (step > 0 && rec.psd == 'y') {
				break
			}
		}
		if step == 0 && len(labels) > dmarcMaxLabels {
			labels = labels[len(labels)-dmarcMaxLabels:]
		} else {
			labels = labels[1:]
		}
	}
	return w, nil
}

// lookupDMARC returns the single DMARC record at _dmarc.domain, or nil when
// there is none, or more than one (RFC 9989: multiple records are all
// discarded). err is a *net.DNSError; not-found errors mean "no record".
func lookupDMARC(ctx context.Context, r Resolver, domain string) (*dmarcRecord, error) {
	txts, err := dkimLookupTXT(ctx, r, "_dmarc."+domain)
	if err != nil {
		return nil, err
	}
	var found *dmarcRecord
	n := 0
	for _, t := range txts {
		if rec, ok := parseDMARCRecord(t); ok {
			found = rec
			n++
		}
	}
	if n != 1 {
		return nil, nil
	}
	return found, nil
}

func dmarcNotFound(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound && !de.IsTemporary && !de.IsTimeout
}

// dmarcNXDomain tells NXDOMAIN from NODATA by the error text: our resolver uses
// "no such host" for NXDOMAIN only (resolver.IsNXDomain); net.Resolver uses it
// for both, which is why domainExists double-checks.
func dmarcNXDomain(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound && de.Err == "no such host"
}

// dmarcOrgFromWalk selects the Organizational Domain from a walk's hits (RFC 9989
// "Organizational Domain Discovery"), longest to shortest: psd=n → that
// domain; psd=y (not at the start) → the domain one label below it; otherwise
// the hit with the fewest labels; no hit → the start domain itself.
func dmarcOrgFromWalk(start string, hits []dmarcWalkHit) string {
	for _, h := range hits {
		if h.rec.psd == 'n' {
			return h.domain
		}
		if h.rec.psd == 'y' && h.domain != start {
			return dmarcChildOn(start, h.domain)
		}
	}
	if len(hits) > 0 {
		return hits[len(hits)-1].domain
	}
	return start
}

// dmarcChildOn returns the name one label below parent on the way to start
// (parent must be a proper suffix of start).
func dmarcChildOn(start, parent string) string {
	sl := strings.Split(start, ".")
	pl := strings.Count(parent, ".") + 1
	return strings.Join(sl[len(sl)-pl-1:], ".")
}

// OrganizationalDomain returns the Organizational Domain of domain by the
// RFC 9989 DNS Tree Walk (no Public Suffix List). The error is non-nil when a
// lookup failed temporarily (the answer would be a guess).
func OrganizationalDomain(ctx context.Context, r Resolver, domain string) (string, error) {
	d, err := fromNormalizeDomain(domain)
	if err != nil {
		return "", fmt.Errorf("dmarc: %w", err)
	}
	w, err := dmarcWalk(ctx, r, d)
	if err != nil {
		return "", err
	}
	return dmarcOrgFromWalk(d, w.hits), nil
}

// EvaluateDMARC applies the DMARC policy of fromDomain (RFC 9989) to the SPF
// verdict for the MAIL FROM (spfResult and the domain it was about) and the
// DKIM results. It sets dkim[i].Aligned. DNS trouble anywhere in the chain is
// temperror.
func EvaluateDMARC(ctx context.Context, r Resolver, fromDomain string, spfResult, spfDomain string, dkim []DKIMResult) DMARCResult {
	ctx, cancel := context.WithTimeout(ctx, dmarcTimeout)
	defer cancel()
	for i := range dkim {
		dkim[i].Aligned = false
	}
	res := DMARCResult{Domain: strings.ToLower(fromDomain)}
	from, err := fromNormalizeDomain(fromDomain)
	if err != nil {
		res.Result, res.Reason = "permerror", "no usable RFC5322.From domain: "+err.Error()
		return res
	}
	res.Domain = from

	ev := &dmarcEval{ctx: ctx, r: r, orgs: make(map[string]string)}
	walk, err := dmarcWalk(ctx, r, from)
	if err != nil {
		res.Result, res.Reason = "temperror", err.Error()
		return res
	}
	org := dmarcOrgFromWalk(from, walk.hits)
	ev.orgs[from] = org
	res.OrgDomain = org

	// Policy discovery (RFC 9989 "DMARC Policy Discovery"): the record of
	// the From domain, else of its Organizational Domain, else of its Public
	// Suffix Domain (a psd=y record found by the walk).
	var pol *dmarcWalkHit
	for i, h := range walk.hits {
		if h.domain == from || h.domain == org {
			pol = &walk.hits[i]
			break
		}
	}
	if pol == nil {
		for i, h := range walk.hits {
			if h.rec.psd == 'y' {
				pol = &walk.hits[i]
				break
			}
		}
	}
	if pol == nil {
		res.Result, res.Reason = "none", "no DMARC policy record"
		return res
	}
	rec := pol.rec
	res.PolicyDomain = pol.domain
	res.Testing = rec.testing

	p, sp, np := rec.p, rec.sp, rec.np
	if rec.badPolicy != "" {
		// RFC 9989: an invalid p, sp or np: with a valid rua, act as if the
		// record said p=none; otherwise apply no DMARC processing.
		if !rec.validRUA {
			res.Result = "permerror"
			res.Reason = fmt.Sprintf("invalid %s= in the record at _dmarc.%s", rec.badPolicy, pol.domain)
			return res
		}
		p, sp, np = "none", "", ""
	}
	if p == "" {
		p = "none" // an otherwise valid record without p= reads as p=none
	}
	switch {
	case pol.domain == from:
		res.Policy = p
	default:
		exists, err := ev.domainExists(from, walk.firstErr)
		if err != nil {
			res.Result, res.Reason = "temperror", err.Error()
			return res
		}
		res.Policy = dmarcFirstNonEmpty(sp, p)
		if !exists {
			res.Policy = dmarcFirstNonEmpty(np, sp, p)
		}
	}

	// Identifier alignment (RFC 9989 "Identifier Alignment Explained").
	var tempErr error
	spfDomain = strings.ToLower(strings.TrimSuffix(spfDomain, "."))
	if spfDomain != "" {
		aligned, err := ev.aligned(from, spfDomain, rec.aspf)
		switch {
		case err != nil:
			if spfResult == "pass" || spfResult == "temperror" {
				tempErr = err
			}
		case aligned && spfResult == "pass":
			res.SPFAligned = true
		case aligned && spfResult == "temperror":
			tempErr = errors.New("SPF temperror for an aligned MAIL FROM")
		}
	}
	for i := range dkim {
		d := strings.ToLower(strings.TrimSuffix(dkim[i].Domain, "."))
		if d == "" {
			continue
		}
		aligned, err := ev.aligned(from, d, rec.adkim)
		if err != nil {
			if dkim[i].Result == "pass" || dkim[i].Result == "temperror" {
				tempErr = err
			}
			continue
		}
		dkim[i].Aligned = aligned
		if !aligned {
			continue
		}
		switch {
		case dkim[i].Result == "pass" && !dkim[i].UnsignedContent:
			res.DKIMAligned = true
		case dkim[i].Result == "temperror":
			tempErr = fmt.Errorf("DKIM temperror for aligned d=%s", d)
		}
	}
	switch {
	case res.SPFAligned || res.DKIMAligned:
		res.Result = "pass"
	case tempErr != nil:
		// RFC 9989 "Determine Handling Policy": with no aligned pass and a
		// temporary error, a permanent failure cannot be concluded.
		res.Result, res.Reason = "temperror", tempErr.Error()
	default:
		res.Result = "fail"
		res.Reason = "no aligned SPF or DKIM pass"
	}
	return res
}

func dmarcFirstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// dmarcEval carries the per-message state of EvaluateDMARC: the context and a
// memo of organizational domains so that each walk runs at most once.
type dmarcEval struct {
	ctx  context.Context
	r    Resolver
	orgs map[string]string
}

func (e *dmarcEval) orgDomain(d string) (string, error) {
	if o, ok := e.orgs[d]; ok {
		return o, nil
	}
	if !dkimValidName(d) {
		return "", fmt.Errorf("dmarc: invalid domain %q", dkimClip(d, 300))
	}
	w, err := dmarcWalk(e.ctx, e.r, d)
	if err != nil {
		return "", err
	}
	o := dmarcOrgFromWalk(d, w.hits)
	e.orgs[d] = o
	return o, nil
}

// domainExists tells whether the From domain exists (RFC 9989: any RR at the
// name; NXDOMAIN means it and everything below it do not, RFC 8020). firstErr
// is the walk's error for _dmarc.<domain>: NODATA there proves existence.
func (e *dmarcEval) domainExists(domain string, firstErr error) (bool, error) {
	if firstErr == nil || (dmarcNotFound(firstErr) && !dmarcNXDomain(firstErr)) {
		return true, nil
	}
	_, err := dkimLookupTXT(e.ctx, e.r, domain)
	if err == nil || (dmarcNotFound(err) && !dmarcNXDomain(err)) {
		return true, nil
	}
	if !dmarcNotFound(err) {
		return false, fmt.Errorf("dmarc existence of %s: %w", domain, err)
	}
	// "no such host": NXDOMAIN for our resolver, but net.Resolver says the
	// same for NODATA; an address record settles it.
	addrs, err := e.r.LookupNetIP(e.ctx, "ip", domain)
	if err == nil && len(addrs) > 0 {
		return true, nil
	}
	if err != nil && !dmarcNotFound(err) {
		return false, fmt.Errorf("dmarc existence of %s: %w", domain, dkimDNSError(e.ctx, domain, err))
	}
	return false, nil
}
