package config

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/ratelimit"
)

// MaildirPrefix marks a downstream that writes into a local maildir.
const MaildirPrefix = "maildir:"

// Validate checks every value and returns all problems found, each with its
// key path. It also normalises domain keys to lower case.
func (c *Config) Validate() Problems {
	var ps Problems
	add := func(path, format string, args ...any) {
		ps = append(ps, Problem{Path: path, Msg: fmt.Sprintf(format, args...)})
	}

	if !validHostname(c.Hostname) {
		add("hostname", "%q is not a valid host name", c.Hostname)
	}
	if len(c.Listen) == 0 {
		add("listen", "at least one address is needed")
	}
	for i, l := range c.Listen {
		if err := checkHostPort(l, true); err != nil {
			add(fmt.Sprintf("listen[%d]", i), "%v", err)
		}
	}

	switch {
	case c.TLS.Cert == "" && c.TLS.Key == "":
	case c.TLS.Cert == "" || c.TLS.Key == "":
		add("tls", "cert and key must be set together")
	default:
		certOK := fileReadable(c.TLS.Cert, "tls.cert", add)
		keyOK := fileReadable(c.TLS.Key, "tls.key", add)
		if certOK && keyOK {
			if _, err := tls.LoadX509KeyPair(c.TLS.Cert, c.TLS.Key); err != nil {
				add("tls", "cannot load certificate and key: %v", err)
			}
		}
	}

	for i, s := range c.ProxyProtocol.Trusted {
		if _, err := ParsePrefix(s); err != nil {
			add(fmt.Sprintf("proxy_protocol.trusted[%d]", i), "%v", err)
		}
	}
	if c.ProxyProtocol.Timeout <= 0 {
		add("proxy_protocol.timeout", "must be positive")
	}

	l := c.Limits
	positive := map[string]int64{
		"limits.max_message_bytes": l.MaxMessageBytes,
		"limits.max_recipients":    int64(l.MaxRecipients),
		"limits.max_conns":         int64(l.MaxConns),
		"limits.max_conns_per_ip":  int64(l.MaxConnsPerIP),
		"limits.max_errors":        int64(l.MaxErrors),
		"limits.command_timeout":   int64(l.CommandTimeout),
		"limits.data_timeout":      int64(l.DataTimeout),
		"limits.max_received":      int64(l.MaxReceived),
		"limits.max_header_bytes":  int64(l.MaxHeaderBytes),
		"relay.connect_timeout":    int64(c.Relay.ConnectTimeout),
		"relay.command_timeout":    int64(c.Relay.CommandTimeout),
		"relay.data_timeout":       int64(c.Relay.DataTimeout),
		"dns.timeout":              int64(c.DNS.Timeout),
		"auth.timeout":             int64(c.Auth.Timeout),
		"auth.max_dkim_signatures": int64(c.Auth.MaxDKIMSignatures),
		"policy.timeout":           int64(c.Policy.Timeout),
		"quarantine.retention":     int64(c.Quarantine.Retention),
		"shutdown.grace":           int64(c.Shutdown.Grace),
	}
	for _, k := range sortedKeys(positive) {
		if positive[k] <= 0 {
			add(k, "must be positive")
		}
	}
	if l.MinDataRate < 0 {
		add("limits.min_data_rate", "must not be negative")
	}
	// RFC 5321 4.5.3.1.6: a text line is up to 1000 octets including CRLF;
	// we must accept at least that.
	if l.MaxLineLength < 1000 {
		add("limits.max_line_length", "must be at least 1000 (RFC 5321 4.5.3.1.6)")
	}
	if l.MaxConnsPerIP > l.MaxConns && l.MaxConns > 0 {
		add("limits.max_conns_per_ip", "is larger than limits.max_conns")
	}

	switch c.Data.LineEndings {
	case "reject", "normalize":
	default:
		add("data.line_endings", "must be reject or normalize, not %q", c.Data.LineEndings)
	}
	if c.Data.SpoolMemory < 0 {
		add("data.spool_memory", "must not be negative")
	}
	if c.Data.MemoryBudget < 0 {
		add("data.memory_budget", "must not be negative")
	}

	for i, s := range c.DNS.Servers {
		if err := checkHostPort(s, false); err != nil {
			add(fmt.Sprintf("dns.servers[%d]", i), "%v", err)
		}
	}

	if len(c.Domains) == 0 {
		add("domains", "no domain configured: every recipient would be refused")
	}
	norm := make(map[string]Domain, len(c.Domains))
	for _, name := range sortedKeys(c.Domains) {
		d := c.Domains[name]
		path := "domains." + name
		lname := strings.TrimSuffix(strings.ToLower(name), ".")
		if !validHostname(lname) {
			add(path, "%q is not a valid domain name", name)
		}
		if _, dup := norm[lname]; dup {
			add(path, "domain listed twice (names are case-insensitive)")
		}
		norm[lname] = d
		if len(d.Downstream) == 0 {
			add(path+".downstream", "no downstream host: where should its mail go?")
		}
		for i, h := range d.Downstream {
			p := fmt.Sprintf("%s.downstream[%d]", path, i)
			if dir, ok := strings.CutPrefix(h, MaildirPrefix); ok {
				if dir == "" {
					add(p, "maildir: needs a directory")
				}
				if len(d.Downstream) > 1 {
					add(p, "a maildir downstream cannot be combined with other hosts")
				}
				continue
			}
			if err := checkHostPort(h, false); err != nil {
				add(p, "%v (want host:port or maildir:PATH)", err)
			}
		}
		switch d.TLS {
		case "", "none", "opportunistic", "required":
		default:
			add(path+".tls", "must be none, opportunistic or required, not %q", d.TLS)
		}
	}
	c.Domains = norm

	if c.Relay.CAFile != "" {
		fileReadable(c.Relay.CAFile, "relay.ca_file", add)
	}

	switch c.Ratelimit.Backend {
	case "memory":
	case "redis":
		checkRedis(c.Ratelimit.Redis, "ratelimit.redis", add)
	default:
		add("ratelimit.backend", "must be memory or redis, not %q", c.Ratelimit.Backend)
	}
	for _, name := range sortedKeys(c.Ratelimit.Limits) {
		s := c.Ratelimit.Limits[name]
		p := "ratelimit.limits." + name
		dim, ok := ratelimit.DimensionByName(name)
		if !ok {
			add(p, "unknown dimension (see docs/ratelimit.md)")
		} else if dim.Unit == ratelimit.Concurrent {
			add(p, "set live connections with ratelimit.concurrency.max_per_net")
		} else if s.SPFPassOnly && !dim.SPFOption {
			add(p+".spf_pass_only", "only applies to the mail_from_domain dimensions")
		}
		if s.Rate <= 0 {
			add(p+".rate", "must be positive")
		}
		if s.Per <= 0 {
			add(p+".per", "must be positive")
		}
		if s.Burst < 0 {
			add(p+".burst", "must not be negative")
		}
		// The limiter keeps time in whole microseconds: one event per
		// microsecond is the finest rate it can represent.
		if s.Rate > 0 && s.Per > 0 && s.Per/time.Duration(s.Rate) < time.Microsecond {
			add(p, "more than one event per microsecond cannot be enforced (per/rate < 1µs): use a larger per with a proportionally larger rate, or a coarser unit")
		}
	}

	if c.Ratelimit.MaxKeys <= 0 {
		add("ratelimit.max_keys", "must be positive")
	}
	if c.Ratelimit.Concurrency.MaxPerNet < 0 {
		add("ratelimit.concurrency.max_per_net", "must not be negative")
	}
	if c.Ratelimit.Concurrency.LeaseTTL <= 0 {
		add("ratelimit.concurrency.lease_ttl", "must be positive")
	}

	if c.Policy.Rules != "" {
		if st, err := os.Stat(c.Policy.Rules); err != nil {
			add("policy.rules", "%v", err)
		} else if !st.IsDir() {
			add("policy.rules", "%s is not a directory", c.Policy.Rules)
		}
	}
	for i, m := range c.Policy.Mask {
		if !strings.HasPrefix(m, "/") {
			add(fmt.Sprintf("policy.mask[%d]", i), "must be a path starting with / (e.g. /message/subject)")
		}
	}

	switch c.Quarantine.Backend {
	case "dir":
		if c.Quarantine.Dir == "" {
			add("quarantine.dir", "must be set for the dir backend")
		}
	case "redis":
		checkRedis(c.Quarantine.Redis, "quarantine.redis", add)
	default:
		add("quarantine.backend", "must be dir or redis, not %q", c.Quarantine.Backend)
	}
	if c.Quarantine.MaxMessageBytes <= 0 {
		add("quarantine.max_message_bytes", "must be positive")
	} else if c.Quarantine.MaxMessageBytes < c.Limits.MaxMessageBytes {
		add("quarantine.max_message_bytes", "is smaller than limits.max_message_bytes: an accepted message could not be quarantined")
	}

	if c.Admin.Listen != "" {
		if err := checkHostPort(c.Admin.Listen, true); err != nil {
			add("admin.listen", "%v", err)
		}
	}
	if c.Runtime.GCPercent < -1 || c.Runtime.GCPercent == 0 {
		add("runtime.gc_percent", "must be positive, or -1 (collect only near runtime.memory_limit), not %d", c.Runtime.GCPercent)
	}
	switch {
	case c.Runtime.MemoryLimit < -1:
		add("runtime.memory_limit", "must be a byte count, 0 (automatic) or -1 (none), not %d", c.Runtime.MemoryLimit)
	case c.Runtime.GCPercent == -1 && c.Runtime.MemoryLimit == -1:
		add("runtime.gc_percent", "-1 needs a runtime.memory_limit: without one the heap would grow without bound")
	case c.Runtime.MemoryLimit > 0 && c.Runtime.MemoryLimit < c.Data.MemoryBudget:
		add("runtime.memory_limit", "is smaller than data.memory_budget: the collector would run constantly once messages fill the budget")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "must be debug, info, warn or error, not %q", c.Log.Level)
	}
	return ps
}

func checkRedis(r Redis, path string, add func(string, string, ...any)) {
	if len(r.Addrs) == 0 {
		add(path+".addrs", "at least one address is needed for the redis backend")
	}
	for i, a := range r.Addrs {
		if err := checkHostPort(a, false); err != nil {
			add(fmt.Sprintf("%s.addrs[%d]", path, i), "%v", err)
		}
	}
	if r.Timeout < 0 {
		add(path+".timeout", "must not be negative")
	}
}

func fileReadable(path, key string, add func(string, string, ...any)) bool {
	f, err := os.Open(path)
	if err != nil {
		add(key, "%v", err)
		return false
	}
	f.Close()
	return true
}

// ParsePrefix accepts a CIDR or a bare address (as a single-host prefix).
func ParsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is neither an address nor a CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func checkHostPort(s string, listen bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (!listen && n == 0) {
		return fmt.Errorf("%q has a bad port", s)
	}
	if host == "" {
		if listen {
			return nil
		}
		return fmt.Errorf("%q has no host", s)
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("%q has a bad host name", s)
	}
	return nil
}

// validHostname checks LDH labels (RFC 1123 2.1), at most 253 octets.
func validHostname(h string) bool {
	h = strings.TrimSuffix(h, ".")
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
