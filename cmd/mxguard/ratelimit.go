package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/ratelimit"
)

const ratelimitUsage = `usage: mxguard ratelimit show|reset (--ip IP | --sender ADDR | --rcpt ADDR | --key KEY) [--config FILE]

  show   prints the current state of the matching buckets
  reset  clears them (buckets and connection leases)

  --ip IP        client_ip* and client_net* buckets of this address (IPv4 /32
                 and /24, IPv6 /64 and /48)
  --sender ADDR  mail_from* buckets of this address and mail_from_domain* of its domain
  --rcpt ADDR    rcpt and rcpt_domain buckets
  --key KEY      one bucket by its full key, e.g. helo:mx.example.org
`

// ratelimitCmdTimeout bounds the whole command against an unresponsive Redis.
const ratelimitCmdTimeout = 10 * time.Second

// runRatelimit implements `mxguard ratelimit show|reset`. Exit codes: 0 ok,
// 1 failure (including backend memory, whose state cannot be reached from
// outside the gateway), 2 usage.
func runRatelimit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "show" && args[0] != "reset") {
		fmt.Fprint(stderr, ratelimitUsage)
		return 2
	}
	verb := args[0]
	fs := flag.NewFlagSet("ratelimit "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, ratelimitUsage) }
	cfgPath := fs.String("config", config.DefaultPath, "configuration file")
	ip := fs.String("ip", "", "client address")
	sender := fs.String("sender", "", "envelope sender")
	rcpt := fs.String("rcpt", "", "envelope recipient")
	key := fs.String("key", "", "full bucket key")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ratelimit %s: unexpected argument %q\n", verb, fs.Arg(0))
		return 2
	}
	set := 0
	for _, s := range []string{*ip, *sender, *rcpt, *key} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		fmt.Fprintf(stderr, "ratelimit %s: give exactly one of --ip, --sender, --rcpt, --key\n", verb)
		return 2
	}

	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "ratelimit %s: %v\n", verb, err)
		return 1
	}
	keys, err := ratelimitKeys(*ip, *sender, *rcpt, *key)
	if err != nil {
		fmt.Fprintf(stderr, "ratelimit %s: %v\n", verb, err)
		return 2
	}
	if cfg.Ratelimit.Backend != "redis" {
		fmt.Fprintf(stderr, "ratelimit %s: backend is %q: the rate-limit state lives inside the running mxguard process and cannot be read or reset from outside it (restarting the gateway clears it; backend: redis makes it shared and inspectable)\n", verb, cfg.Ratelimit.Backend)
		return 1
	}

	client := newRedisClient(cfg.Ratelimit.Redis)
	defer client.Close()
	rl := ratelimit.NewRedis(client, ratelimit.RedisOptions{Prefix: cfg.Ratelimit.KeyPrefix})
	ctx, cancel := context.WithTimeout(context.Background(), ratelimitCmdTimeout)
	defer cancel()

	if verb == "reset" {
		for _, k := range keys {
			if err := rl.Reset(ctx, k.key); err != nil {
				fmt.Fprintf(stderr, "ratelimit reset: %v\n", err)
				return 1
			}
			fmt.Fprintf(stdout, "reset %s\n", k.key)
		}
		return 0
	}

	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tLIMIT\tREMAINING\tRETRY_AFTER\tRATE")
	shown := 0
	for _, k := range keys {
		if k.dim.Unit == ratelimit.Concurrent {
			n, err := rl.Holders(ctx, k.key)
			if err != nil {
				fmt.Fprintf(stderr, "ratelimit show: %v\n", err)
				return 1
			}
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%d live connections\n", k.key, n)
			shown++
			continue
		}
		spec, ok := cfg.Ratelimit.Limits[k.dim.Name]
		if !ok {
			if k.explicit {
				fmt.Fprintf(tw, "%s\t-\t-\t-\tno limit configured for %s\n", k.key, k.dim.Name)
				shown++
			}
			continue
		}
		lim := ratelimit.Limit{Rate: spec.Rate, Per: spec.Per, Burst: spec.Burst}
		res, err := rl.Peek(ctx, k.key, lim)
		if err != nil {
			fmt.Fprintf(stderr, "ratelimit show: %v\n", err)
			return 1
		}
		retry := "-"
		if !res.Allowed {
			retry = res.RetryAfter.Round(time.Millisecond).String()
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d/%s\n", k.key, res.Limit, res.Remaining, retry, spec.Rate, spec.Per)
		shown++
	}
	if err := tw.Flush(); err != nil {
		return 1
	}
	if shown == 0 {
		fmt.Fprintln(stdout, "(no configured limit applies to these keys)")
	}
	return 0
}

type rlKey struct {
	key      string
	dim      ratelimit.Dimension
	explicit bool // named by --key: show it even without a configured limit
}

// ratelimitKeys lists the bucket keys an operator's selector names, using
// the same normalisation as the gateway.
func ratelimitKeys(ip, sender, rcpt, key string) ([]rlKey, error) {
	if key != "" {
		name, _, ok := strings.Cut(key, ":")
		d, known := ratelimit.DimensionByName(name)
		if !ok || !known {
			names := make([]string, 0, len(ratelimit.Dimensions))
			for _, d := range ratelimit.Dimensions {
				names = append(names, d.Name)
			}
			sort.Strings(names)
			return nil, fmt.Errorf("--key %q: want <dimension>:<value> with a dimension among %s", key, strings.Join(names, ", "))
		}
		return []rlKey{{key: key, dim: d, explicit: true}}, nil
	}
	var v ratelimit.Values
	var subjects []ratelimit.Subject
	switch {
	case ip != "":
		a, err := netip.ParseAddr(ip)
		if err != nil {
			return nil, fmt.Errorf("--ip: %w", err)
		}
		v.IP = a
		subjects = []ratelimit.Subject{ratelimit.ClientIP, ratelimit.ClientNet}
	case sender != "":
		if ratelimit.AddrKey(sender) == "" {
			return nil, errors.New("--sender: empty address")
		}
		v.MailFrom = sender
		subjects = []ratelimit.Subject{ratelimit.MailFrom, ratelimit.MailFromDomain}
	case rcpt != "":
		if ratelimit.AddrKey(rcpt) == "" {
			return nil, errors.New("--rcpt: empty address")
		}
		v.Rcpt = rcpt
		subjects = []ratelimit.Subject{ratelimit.Rcpt, ratelimit.RcptDomain}
	}
	var out []rlKey
	for _, d := range ratelimit.Dimensions {
		for _, s := range subjects {
			if d.Subject == s {
				if k := d.Key(v); k != "" {
					out = append(out, rlKey{key: k, dim: d})
				}
			}
		}
	}
	return out, nil
}
