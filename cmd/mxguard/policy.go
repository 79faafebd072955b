package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/filter"
	"github.com/mxguard/mxguard/policy"
)

const policyUsage = `usage:
  mxguard policy test [DIR...] [--coverage] [--config FILE]
      run the Rego unit tests (*_test.rego) of rules directories; without DIR
      the shipped rules and the configured policy.rules; exit 0 when all pass
  mxguard policy eval --input FILE.json [--rules DIR] [--json] [--config FILE]
      evaluate a stored input document and explain the decision
  mxguard policy eval --message FILE.eml --ip IP --helo NAME --mail-from ADDR --rcpt ADDR
                      [--dns HOST:PORT] [--rules DIR] [--json] [--config FILE]
      run the real checks and the policy on one message
  mxguard policy replay --log decisions.jsonl [--rules DIR] [--json] [--config FILE]
      re-evaluate the inputs of a decision log with candidate rules and show
      how the decisions would change
`

// Bounds for replay: a decision-log line holds one input (a few kB; the
// engine refuses inputs over 4 MiB).
const (
	maxReplayLine  = 8 << 20
	maxReplayLines = 10_000_000
)

// runPolicy implements `mxguard policy ...`. Exit codes: 0 ok (all tests
// pass), 1 failure, 2 usage.
func runPolicy(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, policyUsage)
		return 2
	}
	switch args[0] {
	case "test":
		return policyTest(args[1:], stdout, stderr)
	case "eval":
		return policyEval(args[1:], stdout, stderr)
	case "replay":
		return policyReplay(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, policyUsage)
		return 0
	}
	fmt.Fprintf(stderr, "policy: unknown command %q\n%s", args[0], policyUsage)
	return 2
}

func policyFlags(name string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("policy "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, policyUsage) }
	return fs, fs.String("config", config.DefaultPath, "configuration file")
}

// policyConfig loads the configuration. The default path may be absent (the
// tools then use the shipped rules and defaults); a --config given
// explicitly must load.
func policyConfig(fs *flag.FlagSet, path string) (*config.Config, error) {
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })
	cfg, err := config.Load(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	return cfg, nil
}

// engineOptions builds engine options from the config (if any) with rules
// overriding policy.rules.
func engineOptions(cfg *config.Config, rules string) policy.Options {
	o := policy.Options{Enforce: true, HeaderPrefix: policy.DefaultHeaderPrefix}
	if cfg != nil {
		o.Dir = cfg.Policy.Rules
		o.AllowFile = cfg.Policy.AllowFile
		o.Enforce = config.On(cfg.Policy.Enforce)
		o.Timeout = cfg.Policy.Timeout
	}
	if rules != "" {
		o.Dir = rules
	}
	return o
}

func policyTest(args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := policyFlags("test", stderr)
	coverage := fs.Bool("coverage", false, "report which rule lines the tests evaluated")
	asJSON := fs.Bool("json", false, "print the results as JSON")
	dirs, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(dirs) == 0 {
		dirs = []string{""} // the shipped rules
		cfg, err := policyConfig(fs, *cfgPath)
		if err != nil {
			fmt.Fprintf(stderr, "policy test: %v\n", err)
			return 1
		}
		if cfg != nil && cfg.Policy.Rules != "" {
			dirs = append(dirs, cfg.Policy.Rules)
		}
	}
	ctx := context.Background()
	ok := true
	var reports []*policy.TestReport
	for _, dir := range dirs {
		rep, err := policy.RunTests(ctx, dir, *coverage)
		if err != nil {
			fmt.Fprintf(stderr, "policy test: %v\n", err)
			ok = false
			continue
		}
		ok = ok && rep.Passed()
		reports = append(reports, rep)
		if !*asJSON {
			printTestReport(stdout, rep)
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(reports)
	}
	if !ok {
		return 1
	}
	return 0
}

func printTestReport(w io.Writer, rep *policy.TestReport) {
	name := rep.Source
	if name == "embedded" {
		name = "shipped rules"
	}
	pass := 0
	for _, r := range rep.Results {
		if r.Pass {
			pass++
			continue
		}
		fmt.Fprintf(w, "FAIL %s (%s)\n", r.Name, r.Location)
		if r.Error != "" && r.Error != "test failed" {
			fmt.Fprintf(w, "     %s\n", oneLine(r.Error))
		}
	}
	if len(rep.Results) == 0 {
		fmt.Fprintf(w, "%s: no tests\n", name)
	} else {
		fmt.Fprintf(w, "%s: PASS %d/%d\n", name, pass, len(rep.Results))
	}
	if c := rep.Coverage; c != nil {
		fmt.Fprintf(w, "coverage: %.1f%%\n", c.Percent)
		for _, f := range c.Files {
			fmt.Fprintf(w, "  %-40s %5.1f%%", f.File, f.Percent)
			if len(f.NotCovered) > 0 {
				fmt.Fprintf(w, "  not covered: %s", lineList(f.NotCovered))
			}
			fmt.Fprintln(w)
		}
	}
}

// inspectMessage runs the gateway's own checks (filter.Inspect) on a message
// file and returns the data-stage input document.
func inspectMessage(cfg *config.Config, path, ip, helo, mailFrom string, rcpts []string, dnsAddr string) ([]byte, error) {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return nil, fmt.Errorf("--ip %q is not an IP address", ip)
	}
	if cfg == nil {
		cfg = config.Default()
	}
	res, err := newResolver(cfg, dnsAddr)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	opts := filter.Options{
		Hostname:        cfg.Hostname,
		Resolver:        res,
		Checks:          checksFromConfig(cfg),
		MaxMessageBytes: cfg.Limits.MaxMessageBytes,
		MaxHeaderBytes:  cfg.Limits.MaxHeaderBytes,
		MaxLineLength:   cfg.Limits.MaxLineLength,
		SpoolMemory:     cfg.Data.SpoolMemory,
		SpoolDir:        cfg.Data.SpoolDir,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*cfg.Auth.Timeout)
	defer cancel()
	t, err := filter.Inspect(ctx, opts, filter.InspectInput{IP: addr, Helo: helo, MailFrom: mailFrom, Rcpts: rcpts}, f)
	if err != nil {
		return nil, err
	}
	return json.Marshal(t)
}

func lineList(ls []int) string {
	var parts []string
	for i := 0; i < len(ls); {
		j := i
		for j+1 < len(ls) && ls[j+1] == ls[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, fmt.Sprint(ls[i]))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", ls[i], ls[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", "\n     ") }

func policyEval(args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := policyFlags("eval", stderr)
	inputFile := fs.String("input", "", "evaluate this input document (JSON)")
	rules := fs.String("rules", "", "rules directory (default: policy.rules, else the shipped rules)")
	asJSON := fs.Bool("json", false, "print {input, decision} as JSON")
	message := fs.String("message", "", "message file (.eml) to run the real checks on")
	ip := fs.String("ip", "", "client IP for --message")
	helo := fs.String("helo", "", "HELO name for --message")
	mailFrom := fs.String("mail-from", "", "envelope sender for --message")
	var rcpts stringList
	fs.Var(&rcpts, "rcpt", "recipient for --message (repeatable)")
	dnsAddr := fs.String("dns", "", "DNS server HOST:PORT for --message (default: the configured resolver)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "policy eval: unexpected argument %q\n", pos[0])
		return 2
	}
	if (*inputFile == "") == (*message == "") {
		fmt.Fprintln(stderr, "policy eval: give exactly one of --input FILE.json or --message FILE.eml")
		return 2
	}
	cfg, err := policyConfig(fs, *cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "policy eval: %v\n", err)
		return 1
	}
	var input []byte
	if *message != "" {
		if *ip == "" || *helo == "" || !flagSet(fs, "mail-from") || len(rcpts) == 0 {
			fmt.Fprintln(stderr, "policy eval: --message needs --ip, --helo, --mail-from and --rcpt")
			return 2
		}
		input, err = inspectMessage(cfg, *message, *ip, *helo, *mailFrom, rcpts, *dnsAddr)
		if err != nil {
			fmt.Fprintf(stderr, "policy eval: %v\n", err)
			return 1
		}
	} else {
		input, err = os.ReadFile(*inputFile)
		if err != nil {
			fmt.Fprintf(stderr, "policy eval: %v\n", err)
			return 1
		}
	}
	e, err := policy.New(engineOptions(cfg, *rules))
	if err != nil {
		fmt.Fprintf(stderr, "policy eval: %v\n", err)
		return 1
	}
	d, evalErr := e.Eval(context.Background(), input)
	if *asJSON {
		out := struct {
			Input    json.RawMessage `json:"input"`
			Decision policy.Decision `json:"decision"`
			Error    string          `json:"error,omitempty"`
		}{Input: compactJSON(input), Decision: d}
		if evalErr != nil {
			out.Error = evalErr.Error()
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		_ = enc.Encode(out)
	} else {
		printEval(stdout, input, d, evalErr)
	}
	if evalErr != nil {
		return 1
	}
	return 0
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func compactJSON(b []byte) json.RawMessage {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return json.RawMessage(`null`)
	}
	return buf.Bytes()
}

func printEval(w io.Writer, input []byte, d policy.Decision, evalErr error) {
	var pretty bytes.Buffer
	if json.Indent(&pretty, input, "", "  ") != nil {
		pretty.Write(input)
	}
	fmt.Fprintf(w, "input:\n%s\n\n", strings.TrimSpace(pretty.String()))
	if evalErr != nil {
		fmt.Fprintf(w, "error: %v\n", evalErr)
	}
	fmt.Fprintf(w, "decision: %s", d.Action)
	if d.WouldAction != "" {
		fmt.Fprintf(w, " (dry-run: would %s)", d.WouldAction)
	}
	fmt.Fprintf(w, "\n  stage:    %s\n  revision: %s\n  enforced: %v\n  time:     %v\n", d.Stage, d.Revision, d.Enforced, d.Duration.Round(time.Microsecond))
	if d.Reply != nil {
		fmt.Fprintf(w, "  reply:    %d %s %s\n", d.Reply.Code, d.Reply.Enhanced, d.Reply.Text)
	}
	for _, h := range d.AddHeaders {
		fmt.Fprintf(w, "  header:   %s: %s\n", h.Name, h.Value)
	}
	printReasons(w, "reasons", d.Reasons)
	printReasons(w, "dry-run reasons (logged, not enforced)", d.DryRun)
}

func printReasons(w io.Writer, title string, rs []policy.Reason) {
	if len(rs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s:\n", title)
	for _, r := range rs {
		fmt.Fprintf(w, "  %s → %s", r.Code, r.Action)
		if r.Msg != "" {
			fmt.Fprintf(w, ": %s", r.Msg)
		}
		fmt.Fprintln(w)
		if r.Title != "" {
			fmt.Fprintf(w, "      %s\n", r.Title)
		}
		if r.Description != "" {
			fmt.Fprintf(w, "      %s\n", wrap(r.Description, 72, "      "))
		}
		if r.Reply != nil {
			fmt.Fprintf(w, "      reply: %d %s %s\n", r.Reply.Code, r.Reply.Enhanced, r.Reply.Text)
		}
	}
}

func wrap(s string, width int, indent string) string {
	var b strings.Builder
	n := 0
	for i, word := range strings.Fields(s) {
		if i > 0 {
			if n+1+len(word) > width {
				b.WriteString("\n" + indent)
				n = 0
			} else {
				b.WriteByte(' ')
				n++
			}
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}

// replayLine is what replay reads from a decision-log line.
type replayLine struct {
	DecisionID string          `json:"decision_id"`
	TxnID      string          `json:"txn_id"`
	Stage      string          `json:"stage"`
	Input      json.RawMessage `json:"input"`
	Enforced   *bool           `json:"enforced"`
	Result     struct {
		Action      string          `json:"action"`
		WouldAction string          `json:"would_action"`
		Reasons     []policy.Reason `json:"reasons"`
		DryRun      []policy.Reason `json:"dry_run"`
	} `json:"result"`
}

// replayChange is one decision that differs under the candidate rules.
type replayChange struct {
	DecisionID string   `json:"decision_id"`
	TxnID      string   `json:"txn_id,omitempty"`
	Stage      string   `json:"stage"`
	Old        string   `json:"old_action"`
	New        string   `json:"new_action"`
	OldReasons []string `json:"old_reasons"`
	NewReasons []string `json:"new_reasons"`
	NewDryRun  []string `json:"new_dry_run,omitempty"`
	Error      string   `json:"error,omitempty"`
}

type replayReport struct {
	Total       int            `json:"total"`
	Skipped     int            `json:"skipped"`
	Changed     int            `json:"changed"`
	Revision    string         `json:"revision"`
	Transitions map[string]int `json:"transitions"` // "old → new" → count
	Changes     []replayChange `json:"changes"`
}

// oldAction is the recorded action; for a decision logged with
// policy.enforce: false it is the action it would have taken, so a dry-run
// rollout can be compared with enforcing rules. The candidate is always
// evaluated enforcing (its per-code modes still apply).
func oldAction(l *replayLine) (string, []policy.Reason) {
	if l.Enforced != nil && !*l.Enforced {
		a := l.Result.Action
		if l.Result.WouldAction != "" {
			a = l.Result.WouldAction
		}
		return a, l.Result.DryRun
	}
	return l.Result.Action, l.Result.Reasons
}

func policyReplay(args []string, stdout, stderr io.Writer) int {
	fs, cfgPath := policyFlags("replay", stderr)
	logFile := fs.String("log", "", "decision log (JSON lines) to replay")
	rules := fs.String("rules", "", "candidate rules directory (default: policy.rules, else the shipped rules)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if *logFile == "" || len(pos) > 0 {
		fmt.Fprintln(stderr, "policy replay: usage: policy replay --log decisions.jsonl [--rules DIR] [--json]")
		return 2
	}
	cfg, err := policyConfig(fs, *cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "policy replay: %v\n", err)
		return 1
	}
	opts := engineOptions(cfg, *rules)
	opts.Enforce = true // see oldAction
	e, err := policy.New(opts)
	if err != nil {
		fmt.Fprintf(stderr, "policy replay: %v\n", err)
		return 1
	}
	f, err := os.Open(*logFile)
	if err != nil {
		fmt.Fprintf(stderr, "policy replay: %v\n", err)
		return 1
	}
	defer f.Close()
	rep, err := replay(context.Background(), e, f)
	if err != nil {
		fmt.Fprintf(stderr, "policy replay: %s: %v\n", *logFile, err)
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		_ = enc.Encode(rep)
		return 0
	}
	printReplay(stdout, rep)
	return 0
}

func replay(ctx context.Context, e *policy.Engine, r io.Reader) (*replayReport, error) {
	rep := &replayReport{Revision: e.Revision(), Transitions: map[string]int{}, Changes: []replayChange{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxReplayLine)
	line := 0
	for sc.Scan() {
		line++
		if line > maxReplayLines {
			return rep, fmt.Errorf("more than %d lines", maxReplayLines)
		}
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var l replayLine
		if err := json.Unmarshal(b, &l); err != nil || len(l.Input) == 0 || string(l.Input) == "null" {
			rep.Skipped++ // not a decision line, or logged without input
			continue
		}
		rep.Total++
		old, oldReasons := oldAction(&l)
		d, err := e.Eval(ctx, []byte(l.Input))
		now := d.Action
		oldCodes, newCodes := replayCodes(oldReasons), replayCodes(d.Reasons)
		if err != nil {
			now = "error"
		}
		rep.Transitions[old+" → "+now]++
		if old == now && strings.Join(oldCodes, ",") == strings.Join(newCodes, ",") && err == nil {
			continue
		}
		rep.Changed++
		c := replayChange{DecisionID: l.DecisionID, TxnID: l.TxnID, Stage: l.Stage, Old: old, New: now, OldReasons: oldCodes, NewReasons: newCodes}
		if len(d.DryRun) > 0 {
			c.NewDryRun = replayCodes(d.DryRun)
		}
		if err != nil {
			c.Error = err.Error()
		}
		rep.Changes = append(rep.Changes, c)
	}
	if err := sc.Err(); err != nil {
		return rep, fmt.Errorf("line %d: %w", line+1, err)
	}
	return rep, nil
}

func replayCodes(rs []policy.Reason) []string {
	out := []string{}
	for _, r := range rs {
		out = append(out, r.Code)
	}
	sort.Strings(out)
	return out
}

func printReplay(w io.Writer, rep *replayReport) {
	fmt.Fprintf(w, "replayed %d decisions with revision %s (%d lines skipped), %d changed\n\n", rep.Total, rep.Revision, rep.Skipped, rep.Changed)
	keys := make([]string, 0, len(rep.Transitions))
	for k := range rep.Transitions {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintln(w, "old → new:")
	for _, k := range keys {
		fmt.Fprintf(w, "  %-28s %d\n", k, rep.Transitions[k])
	}
	if len(rep.Changes) == 0 {
		return
	}
	fmt.Fprintln(w, "\nchanged decisions:")
	for _, c := range rep.Changes {
		id := c.DecisionID
		if c.TxnID != "" {
			id += " (" + c.TxnID + ")"
		}
		fmt.Fprintf(w, "  %s %s: %s [%s] → %s [%s]", id, c.Stage, c.Old, strings.Join(c.OldReasons, ", "), c.New, strings.Join(c.NewReasons, ", "))
		if len(c.NewDryRun) > 0 {
			fmt.Fprintf(w, " dry-run [%s]", strings.Join(c.NewDryRun, ", "))
		}
		fmt.Fprintln(w)
		if c.Error != "" {
			fmt.Fprintf(w, "      error: %s\n", oneLine(c.Error))
		}
	}
}
