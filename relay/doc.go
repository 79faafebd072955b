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
// # Connection pool
//
// Conn.Close hands a session back to a pool instead of sending QUIT when it
// is healthy (not broken, no timeout), idle (no transaction open: after
// Data got its final reply, after Reset, or never used) and its last
// command succeeded; anything else is QUIT (or just closed if broken), so
// a Conn with an open transaction is never handed out again. Open takes a
// pooled session of the route's hosts (in order) before dialling any.
//
//   - Key: host and the route's TLS mode. A session opened for "none",
//     or left in plaintext by an opportunistic route, never serves a
//     "required" route, and a TLS one never serves "none".
//   - Liveness: a pooled session must answer NOOP within
//     min(CommandTimeout/4, 1s) (and ctx) before it is handed out. A round
//     trip, not a look for unread bytes: it also catches a downstream that
//     hangs or vanished without a FIN, and a 421 sent before closing is
//     read as NOOP's reply. NOOP, not RSET: go-smtp's Reset makes the next
//     command re-send EHLO. A session that fails is closed together with
//     every older idle one of its key (whatever killed it, a restart or an
//     idle timeout, killed those too), and Open goes on to the next host's
//     pooled session, then to dialling. The caller sees no error for it.
//   - Bounds (Options): PoolMaxIdle sessions per key (default 8; a Close
//     beyond it QUITs), PoolIdleTimeout (default 30s; a timer QUITs expired
//     sessions in the background, and Open skips them), PoolMaxUses
//     transactions per session (default 100; checked at Close, so one
//     long-held Conn is never cut mid-session). A negative value in any of
//     them turns pooling off.
//   - The idle list is a stack: the newest session is reused first, older
//     ones expire when traffic falls. Pooled sessions of a backup host are
//     used before dialling the first host; traffic returns to the first
//     host as they expire or reach PoolMaxUses.
//   - Reset sends RSET only when a transaction may be open or the last
//     command failed: after a completed Data it is free.
//   - Relay.Close QUITs every pooled session and turns pooling off (call it
//     at shutdown). Collectors exposes hits, misses, discards by reason and
//     the idle count.
//
// Maildir routes have no connection and are not pooled.
package relay
