package ratelimit

import "net/netip"

// Unit is what a dimension counts.
type Unit string

// Units. Connections counts new connections (a rate); Concurrent counts live
// connections with leases (Leaser), not GCRA.
const (
	Messages    Unit = "messages"
	Recipients  Unit = "recipients"
	Bytes       Unit = "bytes"
	Connections Unit = "connections"
	Concurrent  Unit = "concurrent"
)

// Subject names the part of the transaction a dimension's key is made of.
type Subject string

// Subjects and how Dimension.Key normalises them.
const (
	ClientIP       Subject = "client_ip"        // IPKey(ip, 32, 64)
	ClientNet      Subject = "client_net"       // IPKey(ip, 24, 48)
	HELO           Subject = "helo"             // DomainKey(helo)
	MailFrom       Subject = "mail_from"        // AddrKey(mail from)
	MailFromDomain Subject = "mail_from_domain" // DomainOf(mail from)
	Rcpt           Subject = "rcpt"             // AddrKey(rcpt to)
	RcptDomain     Subject = "rcpt_domain"      // DomainOf(rcpt to)
	DKIMDomain     Subject = "dkim_domain"      // DomainKey(d= of a passing signature)
)

// Dimension is one rate-limit counter. Name is the config key under
// ratelimit.limits and the key under input.ratelimit; Stage is the SMTP stage
// in which the gateway counts it (and the first stage whose input carries
// the fact). Cost is what one count adds: 1 per connection, 1 per MAIL, 1 per
// accepted RCPT, or the message size in bytes at end of DATA.
// SPFOption marks the sender-domain counters that can be restricted to
// senders whose SPF result is pass (ratelimit.spf_pass_only).
type Dimension struct {
	Name      string
	Subject   Subject
	Unit      Unit
	Stage     string
	SPFOption bool
}

// Dimensions is the full list, in stage order. docs/ratelimit.md mirrors it.
var Dimensions = []Dimension{
	{Name: "client_ip_connections", Subject: ClientIP, Unit: Connections, Stage: "connect"},
	{Name: "client_net_connections", Subject: ClientNet, Unit: Connections, Stage: "connect"},
	{Name: "client_net_concurrent", Subject: ClientNet, Unit: Concurrent, Stage: "connect"},

	{Name: "client_ip", Subject: ClientIP, Unit: Messages, Stage: "mail"},
	{Name: "client_net", Subject: ClientNet, Unit: Messages, Stage: "mail"},
	{Name: "helo", Subject: HELO, Unit: Messages, Stage: "mail"},
	{Name: "mail_from", Subject: MailFrom, Unit: Messages, Stage: "mail"},
	{Name: "mail_from_domain", Subject: MailFromDomain, Unit: Messages, Stage: "mail", SPFOption: true},

	{Name: "client_ip_rcpts", Subject: ClientIP, Unit: Recipients, Stage: "rcpt"},
	{Name: "client_net_rcpts", Subject: ClientNet, Unit: Recipients, Stage: "rcpt"},
	{Name: "mail_from_rcpts", Subject: MailFrom, Unit: Recipients, Stage: "rcpt"},
	{Name: "mail_from_domain_rcpts", Subject: MailFromDomain, Unit: Recipients, Stage: "rcpt", SPFOption: true},
	{Name: "rcpt", Subject: Rcpt, Unit: Messages, Stage: "rcpt"},
	{Name: "rcpt_domain", Subject: RcptDomain, Unit: Messages, Stage: "rcpt"},

	{Name: "client_ip_bytes", Subject: ClientIP, Unit: Bytes, Stage: "data"},
	{Name: "client_net_bytes", Subject: ClientNet, Unit: Bytes, Stage: "data"},
	{Name: "mail_from_bytes", Subject: MailFrom, Unit: Bytes, Stage: "data"},
	{Name: "mail_from_domain_bytes", Subject: MailFromDomain, Unit: Bytes, Stage: "data", SPFOption: true},
	{Name: "dkim_domain", Subject: DKIMDomain, Unit: Messages, Stage: "data"},
	{Name: "dkim_domain_bytes", Subject: DKIMDomain, Unit: Bytes, Stage: "data"},
}

var dimensionIndex = func() map[string]int {
	m := make(map[string]int, len(Dimensions))
	for i, d := range Dimensions {
		m[d.Name] = i
	}
	return m
}()

// DimensionByName looks a dimension up by its config name.
func DimensionByName(name string) (Dimension, bool) {
	i, ok := dimensionIndex[name]
	if !ok {
		return Dimension{}, false
	}
	return Dimensions[i], true
}

// Values are the raw parts of a transaction a key can be made of; empty or
// invalid parts give no key.
type Values struct {
	IP         netip.Addr
	HELO       string
	MailFrom   string
	Rcpt       string
	DKIMDomain string
}

// Key returns the bucket key of d for v, normalised (Key(d.Name, value)), or
// "" when v lacks the part d needs (e.g. the null sender for mail_from).
func (d Dimension) Key(v Values) string {
	var val string
	switch d.Subject {
	case ClientIP:
		val = IPKey(v.IP, 32, 64)
	case ClientNet:
		val = IPKey(v.IP, 24, 48)
	case HELO:
		val = DomainKey(v.HELO)
	case MailFrom:
		val = AddrKey(v.MailFrom)
	case MailFromDomain:
		val = DomainOf(v.MailFrom)
	case Rcpt:
		val = AddrKey(v.Rcpt)
	case RcptDomain:
		val = DomainOf(v.Rcpt)
	case DKIMDomain:
		val = DomainKey(v.DKIMDomain)
	}
	if val == "" {
		return ""
	}
	return Key(d.Name, val)
}

// IsRateDimension reports whether name is a GCRA dimension, i.e. a valid key
// under ratelimit.limits (the program sets config.KnownRateDimension to it).
// client_net_concurrent is not one: it is configured by a maximum, not a rate.
func IsRateDimension(name string) bool {
	d, ok := DimensionByName(name)
	return ok && d.Unit != Concurrent
}
