// Package relay is mxguard's downstream SMTP client: it routes each
// recipient domain to its mailbox servers (or to a maildir for demos and dry
// runs), fails over between a route's hosts, applies the route's STARTTLS
// policy, and gives the gateway a lockstep Conn on which it mirrors MAIL,
// RCPT and DATA while the sender waits. There is no queue: every downstream
// verdict goes back to the sender in-band.
//
// # Errors
//
// A reply from the downstream (4xx/5xx) is returned as *ReplyError, found
// with errors.As. Everything else (no host reachable, timeouts, TLS required
// but not possible, a broken connection, protocol garbage, a maildir that
// cannot be written) is a plain error. IsTemporary reports whether the
// sender should get a 4xx: true for everything except a 5xx ReplyError.
//
// # TLS modes
//
//   - none: plaintext, STARTTLS is never tried.
//   - opportunistic: STARTTLS when the downstream offers it (RFC 3207). If the
//     downstream refuses the STARTTLS command, the session goes on in
//     plaintext; if the handshake fails (including certificate verification,
//     unless Options.InsecureSkipVerify), the host is dialled again and used
//     without TLS: a connection cannot be recovered after a failed handshake,
//     and RFC 7435 (opportunistic security) asks that opportunistic
//     protection never stop communication that would otherwise happen in
//     cleartext. Options.InsecureSkipVerify accepts unverified certificates
//     on these routes only; RFC 7435 prefers unauthenticated encryption to
//     cleartext, so production wiring should normally set it.
//   - required: STARTTLS with a verified certificate (Options.RootCAs or the
//     system pool; host name from the route's host) or nothing: no STARTTLS
//     offered, a refused STARTTLS or a bad certificate is an error for that
//     host and MAIL is never sent in plaintext.
//
// # Timeouts
//
// Every wait on the network is bounded: dialling by ConnectTimeout, the
// greeting and every command reply by CommandTimeout, the whole DATA
// transfer plus its final reply by DataTimeout, QUIT by a short fixed bound.
// A hung downstream therefore costs a session at most one of these.
//
// # Connection reuse
//
// Open always dials. A Conn stays usable after Data (whatever the reply)
// and after Reset, so a later connection pool can keep greeted Conns per
// route and hand them out from Open; Close is the single place where a Conn
// would be returned to such a pool instead of sending QUIT.
package relay
