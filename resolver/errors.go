package resolver

import (
	"errors"
	"net"
)

// Error texts of the *net.DNSError values this package returns. NXDOMAIN and
// NODATA are both IsNotFound; their Err text tells them apart (IsNXDomain,
// IsNoData).
const (
	errTextNXDomain  = "no such host"                        // the name does not exist (RFC 1035 4.1.1 rcode 3)
	errTextNoData    = "no records of the requested type"    // the name exists without that type (RFC 2308 2.2)
	errTextServFail  = "server misbehaving"                  // SERVFAIL
	errTextRefused   = "server refused the query"            // REFUSED
	errTextTimeout   = "i/o timeout"                         // no answer in time
	errTextCanceled  = "operation was canceled"              // the caller's ctx was cancelled
	errTextMismatch  = "response does not match the query"   // wrong question / not a response
	errTextChain     = "CNAME chain too long"                // more than maxCNAME hops
	errTextNoServers = "no DNS servers configured"           // empty config and resolv.conf
	errTextBadName   = "invalid domain name"                 // over 253 octets, label over 63, empty label
	errTextNetwork   = "unknown network"                     // LookupNetIP network not ip/ip4/ip6
	errTextBadAddr   = "unrecognized address"                // LookupAddr argument is not an IP
	errTextBadRcode  = "server returned an unexpected rcode" // any rcode other than NOERROR/NXDOMAIN/SERVFAIL/REFUSED
)

// IsNXDomain reports whether err says the name does not exist (NXDOMAIN), as
// opposed to NODATA (the name exists without records of the type) or a
// temporary failure.
func IsNXDomain(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound && de.Err == errTextNXDomain
}

// IsNoData reports whether err says the name exists but has no records of the
// requested type (NODATA, RFC 2308 2.2).
func IsNoData(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.IsNotFound && de.Err == errTextNoData
}

// kind classifies the outcome of one question; it selects the error text,
// the net.DNSError flags and the failures metric label.
type kind uint8

const (
	kindOK kind = iota
	kindNXDomain
	kindNoData
	kindServFail
	kindRefused
	kindRcode
	kindTimeout
	kindCanceled
	kindNetwork
	kindMismatch
	kindChain
	kindInvalid
	numKinds
)

var kindNames = [numKinds]string{
	kindOK:       "ok",
	kindNXDomain: "nxdomain",
	kindNoData:   "nodata",
	kindServFail: "servfail",
	kindRefused:  "refused",
	kindRcode:    "rcode",
	kindTimeout:  "timeout",
	kindCanceled: "canceled",
	kindNetwork:  "network",
	kindMismatch: "mismatch",
	kindChain:    "cname_chain",
	kindInvalid:  "invalid",
}

// temporary reports whether a retry later may succeed. A CNAME chain that is
// too long is temporary, as a recursive server answers it with SERVFAIL.
func (k kind) temporary() bool {
	switch k {
	case kindServFail, kindRefused, kindRcode, kindTimeout, kindCanceled, kindNetwork, kindMismatch, kindChain:
		return true
	}
	return false
}

// newError builds the one error type callers may rely on. It is returned
// unwrapped: go-msgauth type-asserts net.Error / *net.DNSError to tell a
// temperror from a permerror, and SPF counts void lookups by IsNotFound.
func newError(k kind, text, name, server string, cause error) *net.DNSError {
	if text == "" {
		switch k {
		case kindNXDomain:
			text = errTextNXDomain
		case kindNoData:
			text = errTextNoData
		case kindServFail:
			text = errTextServFail
		case kindRefused:
			text = errTextRefused
		case kindRcode:
			text = errTextBadRcode
		case kindTimeout:
			text = errTextTimeout
		case kindCanceled:
			text = errTextCanceled
		case kindMismatch:
			text = errTextMismatch
		case kindChain:
			text = errTextChain
		case kindInvalid:
			text = errTextBadName
		default:
			text = "lookup failed"
		}
	}
	return &net.DNSError{
		Err:         text,
		Name:        name,
		Server:      server,
		IsTimeout:   k == kindTimeout,
		IsTemporary: k.temporary(),
		IsNotFound:  k == kindNXDomain || k == kindNoData,
		UnwrapErr:   cause,
	}
}
