package auth

// aligned reports whether an authenticated domain d is in identifier alignment
// with the RFC5322.From domain under mode 's' (strict: the same name) or 'r'
// (relaxed: the same Organizational Domain, found by the DNS tree walk)
// (RFC 9989 "Identifier Alignment Explained"). Both names are lower-case
// without a trailing dot. err is a temporary DNS failure of a walk.
func (e *dmarcEval) aligned(from, d string, mode byte) (bool, error) {
	if d == from {
		return true, nil
	}
	if mode == 's' {
		return false, nil
	}
	// Relaxed: two names can only share an Organizational Domain if one is
	// the other's ancestor or they share a parent; a cheap suffix test avoids
	// tree walks for unrelated names (the common case for third-party
	// signatures).
	if !dmarcShareParent(from, d) {
		return false, nil
	}
	fo, err := e.orgDomain(from)
	if err != nil {
		return false, err
	}
	do, err := e.orgDomain(d)
	if err != nil {
		return false, err
	}
	return fo == do, nil
}

// dmarcShareParent reports whether a and b have a common proper ancestor other than
// the root, i.e. the same last label at least. Names with different TLDs
// never share an Organizational Domain.
func dmarcShareParent(a, b string) bool {
	return dmarcLastLabel(a) == dmarcLastLabel(b)
}

func dmarcLastLabel(s string) string {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == '.' {
			return s[i+1:]
		}
	}
	return s
}
