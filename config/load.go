package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxConfigBytes bounds the file we read: a config is a few kilobytes.
const maxConfigBytes = 4 << 20

// Problem is one thing wrong with a config, at a key path such as
// "domains.corp.example.downstream[0]".
type Problem struct {
	Path string
	Line int
	Msg  string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", p.Path, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.Path, p.Msg)
}

// Problems is every problem found in one config; it is an error.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Default returns the embedded defaults: what the gateway runs on when a key
// is not set.
func Default() *Config {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return &Config{
		Hostname: host,
		Listen:   []string{"0.0.0.0:25"},
		ProxyProtocol: ProxyProtocol{
			Timeout: 5 * time.Second,
		},
		Limits: Limits{
			MaxMessageBytes: 25 << 20,
			MaxRecipients:   100,
			MaxConns:        2000,
			MaxConnsPerIP:   20,
			MaxErrors:       10,
			CommandTimeout:  5 * time.Minute,
			DataTimeout:     10 * time.Minute,
			MinDataRate:     1024,
			// RFC 5321 4.5.3.1.4 allows 512 octets per command line; the
			// extensions we advertise add parameters (SIZE, BODY, SMTPUTF8),
			// RFC 1869 4 allows each of them 512 more. Text lines (4.5.3.1.6)
			// are 1000 octets; we take the same bound for both.
			MaxLineLength:  2000,
			MaxReceived:    50,
			MaxHeaderBytes: 1 << 20,
		},
		Data: Data{
			LineEndings:  "reject",
			SpoolMemory:  1 << 20,
			MemoryBudget: 256 << 20,
		},
		DNS: DNS{
			Timeout:   2 * time.Second,
			CacheSize: 100000,
		},
		Auth: Auth{
			MaxDKIMSignatures: 5,
			Timeout:           20 * time.Second,
		},
		Relay: Relay{
			ConnectTimeout: 10 * time.Second,
			CommandTimeout: time.Minute,
			DataTimeout:    10 * time.Minute,
			Pool:           Pool{MaxIdle: 8, IdleTimeout: 30 * time.Second, MaxUses: 100},
		},
		Ratelimit: Ratelimit{
			Backend:     "memory",
			KeyPrefix:   "mxg:rl:",
			MaxKeys:     1_000_000,
			Redis:       Redis{Timeout: 50 * time.Millisecond},
			Breaker:     Breaker{Failures: 3, Cooldown: 5 * time.Second},
			Concurrency: Concurrency{LeaseTTL: 2 * time.Minute},
		},
		Policy: Policy{
			Timeout: time.Second,
		},
		Quarantine: Quarantine{
			Backend:         "dir",
			Dir:             "/var/lib/mxguard/quarantine",
			Retention:       30 * 24 * time.Hour,
			KeyPrefix:       "mxg:q:",
			MaxMessageBytes: 50 << 20,
		},
		Admin:    Admin{Listen: "127.0.0.1:9025"},
		Log:      Log{Level: "info"},
		Shutdown: Shutdown{Grace: 30 * time.Second},
		Runtime:  Runtime{GCPercent: 400},
	}
}

// Load reads, strictly decodes and validates a config file. The returned
// error is a Problems listing everything wrong, each with its key path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(data) > maxConfigBytes {
		return nil, fmt.Errorf("config %s: larger than %d bytes", path, maxConfigBytes)
	}
	return Parse(data)
}

// Parse decodes and validates a config document.
func Parse(data []byte) (*Config, error) {
	cfg := Default()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, Problems{{Path: "(file)", Msg: err.Error()}}
	}
	var probs Problems
	if len(root.Content) > 0 {
		// Walk the tree first so that every unknown key is reported, not
		// just the first one yaml's strict mode would stop at.
		unknownKeys(root.Content[0], reflect.TypeOf(*cfg), "", &probs)
		if len(probs) > 0 {
			return nil, probs
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
			var te *yaml.TypeError
			if errors.As(err, &te) {
				for _, e := range te.Errors {
					probs = append(probs, Problem{Path: "(value)", Msg: e})
				}
				return nil, probs
			}
			return nil, Problems{{Path: "(file)", Msg: err.Error()}}
		}
	}
	if ps := cfg.Validate(); len(ps) > 0 {
		return nil, ps
	}
	return cfg, nil
}

// unknownKeys reports mapping keys that have no field in t.
func unknownKeys(n *yaml.Node, t reflect.Type, path string, probs *Problems) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode || t == reflect.TypeOf(time.Duration(0)) {
			return
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name != "" && name != "-" {
				fields[name] = f.Type
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			p := join(path, k.Value)
			if !ok {
				*probs = append(*probs, Problem{Path: p, Line: k.Line, Msg: "unknown key" + suggest(k.Value, fields)})
				continue
			}
			unknownKeys(v, ft, p, probs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			unknownKeys(n.Content[i+1], t.Elem(), join(path, n.Content[i].Value), probs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			unknownKeys(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i), probs)
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest names the known key closest to a misspelt one.
func suggest(key string, fields map[string]reflect.Type) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	best, bestD := "", 3
	for _, n := range names {
		if d := editDistance(key, n); d < bestD {
			best, bestD = n, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
