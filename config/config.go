// Package config holds mxguard's one configuration file: the Config struct,
// strict YAML loading (unknown keys are errors), the embedded defaults, and
// Validate, which reports every problem with its key path.
package config

import (
	"time"
)

// DefaultPath is where serve and the other subcommands look without --config.
const DefaultPath = "/etc/mxguard/mxguard.yaml"

// Config is the whole configuration. Durations are Go duration strings
// ("5m", "200ms"); sizes are bytes.
type Config struct {
	// Hostname is the EHLO/banner name and the Authentication-Results authserv-id.
	Hostname      string            `yaml:"hostname"`
	Listen        []string          `yaml:"listen"`
	TLS           TLS               `yaml:"tls"`
	ProxyProtocol ProxyProtocol     `yaml:"proxy_protocol"`
	Limits        Limits            `yaml:"limits"`
	Data          Data              `yaml:"data"`
	DNS           DNS               `yaml:"dns"`
	Auth          Auth              `yaml:"auth"`
	Domains       map[string]Domain `yaml:"domains"`
	Relay         Relay             `yaml:"relay"`
	Ratelimit     Ratelimit         `yaml:"ratelimit"`
	Policy        Policy            `yaml:"policy"`
	Quarantine    Quarantine        `yaml:"quarantine"`
	Admin         Admin             `yaml:"admin"`
	Log           Log               `yaml:"log"`
	Shutdown      Shutdown          `yaml:"shutdown"`
	Runtime       Runtime           `yaml:"runtime"`
}

// TLS is the inbound STARTTLS certificate. Both empty: no STARTTLS.
type TLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// ProxyProtocol lists the peers (load balancers) allowed to send a PROXY
// protocol v1/v2 header. Empty: PROXY protocol is off.
type ProxyProtocol struct {
	Trusted []string      `yaml:"trusted"`
	Timeout time.Duration `yaml:"timeout"`
}

// Limits bound what one client can make the gateway do.
type Limits struct {
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	MaxRecipients   int   `yaml:"max_recipients"`
	MaxConns        int   `yaml:"max_conns"`
	MaxConnsPerIP   int   `yaml:"max_conns_per_ip"`
	// MaxErrors is how many error replies a session may collect before it is closed.
	MaxErrors      int           `yaml:"max_errors"`
	CommandTimeout time.Duration `yaml:"command_timeout"`
	DataTimeout    time.Duration `yaml:"data_timeout"`
	// MinDataRate in bytes per second: a DATA transfer slower than this (after
	// the first command_timeout) is cut off, so a slow-drip client cannot hold
	// a session for the whole data_timeout.
	MinDataRate int `yaml:"min_data_rate"`
	// MaxLineLength applies to command lines and to text lines in DATA.
	MaxLineLength int `yaml:"max_line_length"`
	// MaxReceived Received headers or more means a mail loop.
	MaxReceived int `yaml:"max_received"`
	// MaxHeaderBytes bounds the header section read into memory.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// Data says how DATA content is checked.
type Data struct {
	// LineEndings: "reject" (550 5.6.0 on bare CR, bare LF or NUL) or
	// "normalize" (rewrite them to CRLF, drop NUL, record the fact).
	LineEndings string `yaml:"line_endings"`
	// SpoolMemory is how many bytes of a message are kept in memory before it
	// spills to a temporary file.
	SpoolMemory int64  `yaml:"spool_memory"`
	SpoolDir    string `yaml:"spool_dir"`
	// MemoryBudget bounds the message bytes held in memory by all sessions
	// together; beyond it messages spill to spool_dir at once.
	MemoryBudget int64 `yaml:"memory_budget"`
}

// DNS configures the caching resolver.
type DNS struct {
	Servers   []string      `yaml:"servers"`
	Timeout   time.Duration `yaml:"timeout"`
	CacheSize int           `yaml:"cache_size"`
}

// Auth switches the sender-authentication checks.
type Auth struct {
	SPF               *bool         `yaml:"spf"`
	DKIM              *bool         `yaml:"dkim"`
	DMARC             *bool         `yaml:"dmarc"`
	FCrDNS            *bool         `yaml:"fcrdns"`
	MaxDKIMSignatures int           `yaml:"max_dkim_signatures"`
	Timeout           time.Duration `yaml:"timeout"`
}

// On reports a *bool switch that defaults to on.
func On(b *bool) bool { return b == nil || *b }

// Domain is one accepted recipient domain and where its mail goes.
type Domain struct {
	// Downstream: "host:port" entries tried in order, or one "maildir:PATH".
	Downstream []string `yaml:"downstream"`
	// TLS toward the downstream: none, opportunistic, required.
	TLS string `yaml:"tls"`
}

// Relay tunes the downstream SMTP client.
type Relay struct {
	ConnectTimeout time.Duration `yaml:"connect_timeout"`
	CommandTimeout time.Duration `yaml:"command_timeout"`
	DataTimeout    time.Duration `yaml:"data_timeout"`
	// CAFile adds trusted roots for verifying downstream certificates.
	CAFile string `yaml:"ca_file"`
	// Pool keeps greeted downstream sessions for the next transaction.
	Pool Pool `yaml:"pool"`
}

// Pool bounds the downstream connection pool (0: defaults; a negative value
// turns pooling off).
type Pool struct {
	MaxIdle     int           `yaml:"max_idle"`
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	MaxUses     int           `yaml:"max_uses"`
}

// Redis is a connection to Redis standalone, Sentinel (master_name set) or
// Cluster (several addrs, no master_name).
type Redis struct {
	Addrs      []string      `yaml:"addrs"`
	MasterName string        `yaml:"master_name"`
	Username   string        `yaml:"username"`
	Password   string        `yaml:"password"`
	DB         int           `yaml:"db"`
	Timeout    time.Duration `yaml:"timeout"`
}

// RateSpec is one GCRA limit: Rate events per Per; Burst is the bucket
// size (0: Rate).
type RateSpec struct {
	Rate  int           `yaml:"rate"`
	Per   time.Duration `yaml:"per"`
	Burst int           `yaml:"burst"`
	// SPFPassOnly counts only senders whose SPF result is pass (sender-domain
	// dimensions), so a forger cannot use up a real domain's allowance.
	SPFPassOnly bool `yaml:"spf_pass_only"`
}

// Ratelimit configures the limiter backend and the limit per dimension.
type Ratelimit struct {
	Backend   string `yaml:"backend"`
	Redis     Redis  `yaml:"redis"`
	KeyPrefix string `yaml:"key_prefix"`
	// GatewayID names this gateway in connection leases; default hostname-pid-random.
	GatewayID   string              `yaml:"gateway_id"`
	MaxKeys     int                 `yaml:"max_keys"`
	Breaker     Breaker             `yaml:"breaker"`
	Concurrency Concurrency         `yaml:"concurrency"`
	Limits      map[string]RateSpec `yaml:"limits"`
}

// Breaker is the Redis circuit breaker of the rate limiter.
type Breaker struct {
	Failures int           `yaml:"failures"`
	Cooldown time.Duration `yaml:"cooldown"`
}

// Concurrency limits live connections per client network across gateways.
type Concurrency struct {
	// MaxPerNet 0: no limit.
	MaxPerNet int           `yaml:"max_per_net"`
	LeaseTTL  time.Duration `yaml:"lease_ttl"`
}

// Headers are the X-MXGuard-* headers added to relayed mail.
type Headers struct {
	Verdict    *bool `yaml:"verdict"`
	Reasons    *bool `yaml:"reasons"`
	DecisionID *bool `yaml:"decision_id"`
}

// Policy configures the Rego engine.
type Policy struct {
	// Rules is a directory of .rego files (and data .json/.yaml); empty: the shipped rules.
	Rules   string        `yaml:"rules"`
	Enforce *bool         `yaml:"enforce"`
	Timeout time.Duration `yaml:"timeout"`
	// DecisionLog is a file path, "stdout", or empty for none.
	DecisionLog string `yaml:"decision_log"`
	// Mask lists input paths (e.g. "/message/subject") masked in the decision log.
	Mask []string `yaml:"mask"`
	// AllowFile is the JSON list of allowed senders that `quarantine release --allow-sender` appends to.
	AllowFile string  `yaml:"allow_file"`
	Headers   Headers `yaml:"headers"`
	// Reload watches the rules directory and reloads on change (SIGHUP always reloads).
	Reload *bool `yaml:"reload"`
}

// Quarantine configures where held messages are kept.
type Quarantine struct {
	Backend         string        `yaml:"backend"`
	Dir             string        `yaml:"dir"`
	Retention       time.Duration `yaml:"retention"`
	Redis           Redis         `yaml:"redis"`
	KeyPrefix       string        `yaml:"key_prefix"`
	MaxMessageBytes int64         `yaml:"max_message_bytes"`
}

// Admin is the HTTP listener for /metrics, /healthz and /readyz.
type Admin struct {
	Listen string `yaml:"listen"`
	// Pprof serves net/http/pprof under /debug/pprof/ (profiling; keep the
	// admin listener on loopback when it is on).
	Pprof bool `yaml:"pprof"`
}

// Log configures the JSON log on stderr.
type Log struct {
	Level string `yaml:"level"`
}

// Runtime tunes the Go garbage collector of the serving process. The
// gateway's live heap is small (tens of MiB) and churns once per message,
// so with Go's default GOGC=100 it collects very often: about 15 % of the
// CPU in the load benchmark (docs/performance.md). The environment
// variables GOGC and GOMEMLIMIT, when set, take precedence.
type Runtime struct {
	// GCPercent is the GOGC value: the heap may grow by this percentage of
	// the live heap before the next collection. -1 turns the collector off
	// until MemoryLimit is reached.
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimit is the soft memory limit (GOMEMLIMIT) in bytes: near it
	// the collector runs as often as needed regardless of GCPercent, which
	// is what keeps a high GCPercent from multiplying the heap when large
	// messages fill data.memory_budget. 0 = automatic: data.memory_budget
	// plus 256 MiB for everything else; -1 = none.
	MemoryLimit int64 `yaml:"memory_limit"`
}

// Shutdown bounds a graceful stop.
type Shutdown struct {
	// Grace is how long transactions in DATA may take to finish after SIGTERM.
	Grace time.Duration `yaml:"grace"`
}
