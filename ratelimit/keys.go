package ratelimit

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"strings"
)

// Key joins a dimension name and a normalised value into a bucket key,
// e.g. Key("client_net", IPKey(ip, 24, 48)) = "client_net:192.0.2.0/24".
func Key(dimension, value string) string { return dimension + ":" + value }

// IPKey normalises a client address to the prefix that shares a bucket:
// v4bits for IPv4 (32 or 24 in the shipped dimensions) and v6bits for IPv6
// (64 or 48: one end site usually holds a whole /64 or /48, so counting single
// IPv6 addresses would let a client rotate through 2^64 buckets).
// IPv4-mapped IPv6 (::ffff:a.b.c.d) counts as IPv4 and zones are dropped.
// A full-length prefix is written as the bare address, shorter ones in CIDR
// form. An invalid address gives "".
func IPKey(addr netip.Addr, v4bits, v6bits int) string {
	if !addr.IsValid() {
		return ""
	}
	addr = addr.Unmap().WithZone("")
	bits := v6bits
	if addr.Is4() {
		bits = v4bits
	}
	if bits < 0 || bits >= addr.BitLen() {
		return addr.String()
	}
	p, err := addr.Prefix(bits)
	if err != nil {
		return addr.String()
	}
	return p.String()
}

// AddrKey normalises an envelope address: angle brackets and surrounding
// space removed, the whole address lower-cased. RFC 5321 2.4 lets a local part
// be case-sensitive, but in practice mailbox providers fold case, and case
// variants are a free way to dodge a per-sender limit; at worst two distinct
// mailboxes that differ only in case share a bucket.
//
// Sub-addresses (user+tag) are NOT stripped: the separator is a per-site
// convention a gateway cannot know for remote domains ("+", "-", or none, and
// "+" is an ordinary local-part character elsewhere), so stripping could merge
// unrelated mailboxes. Tag rotation by one sender is caught by the
// mail_from_domain limits instead.
//
// The null reverse-path ("" or "<>") gives "": callers skip the sender
// dimensions for bounces rather than make every bounce share one bucket.
func AddrKey(addr string) string {
	a := strings.TrimSpace(addr)
	a = strings.TrimPrefix(a, "<")
	a = strings.TrimSuffix(a, ">")
	if a == "" {
		return ""
	}
	i := strings.LastIndexByte(a, '@')
	if i < 0 {
		return strings.ToLower(a)
	}
	return strings.ToLower(a[:i]) + "@" + DomainKey(a[i+1:])
}

// DomainKey normalises a domain name: lower-cased, surrounding space and the
// trailing root dot removed.
func DomainKey(d string) string {
	d = strings.TrimSpace(d)
	d = strings.TrimSuffix(d, ".")
	return strings.ToLower(d)
}

// DomainOf returns the normalised domain of an address ("" if none).
func DomainOf(addr string) string {
	a := AddrKey(addr)
	if i := strings.LastIndexByte(a, '@'); i >= 0 {
		return a[i+1:]
	}
	return ""
}

// boundKey caps key length: HELO names and addresses come from the network.
// A long key keeps a readable head and gets a hash of the whole appended, so
// distinct long keys stay distinct.
func boundKey(key string) string {
	if len(key) <= maxKeyLen {
		return key
	}
	sum := sha256.Sum256([]byte(key))
	return key[:maxKeyLen-65] + "#" + hex.EncodeToString(sum[:])
}
