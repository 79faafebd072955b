// Package loadenv starts the loopback servers the load generator (cmd/mxload)
// runs against, outside of `go test`: an authoritative DNS server serving a
// fixed set of records, a discarding SMTP sink standing in for the mailbox
// servers, and a private redis-server. internal/testenv has richer versions
// of the same servers bound to testing.TB; these are deliberately small.
package loadenv
