// Package auth answers "is the sender who it claims to be?" for one message:
// SPF (RFC 7208, our own evaluator), DKIM (RFC 6376, RFC 8463 ed25519,
// RFC 8301 algorithm and key-size rules, via go-msgauth), DMARC (RFC 9989
// DNS tree walk and alignment; RFC 7489 records are read as RFC 9989 says),
// the RFC5322.From extraction, and Authentication-Results (RFC 8601).
//
// Everything here is a pure function over a Resolver: no logging, no global
// state. DNS trouble is a temperror result, never an error return, so the
// caller records it as a fact and the policy decides what it means.
package auth
