package auth

import (
	"context"
	"net"
	"net/netip"
)

// Resolver is the DNS the checks run on. Both *resolver.Resolver (our caching
// stub resolver) and *net.Resolver satisfy it.
//
// Errors must be *net.DNSError, returned unwrapped: go-msgauth tells a DKIM or
// DMARC temperror from a permerror by type-asserting net.Error/Temporary(), and
// SPF counts void lookups by IsNotFound. NXDOMAIN and NODATA are IsNotFound;
// SERVFAIL, REFUSED and timeouts are IsTemporary (timeouts also IsTimeout).
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
}
