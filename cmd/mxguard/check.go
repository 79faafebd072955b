package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/mxguard/mxguard/auth"
	"github.com/mxguard/mxguard/resolver"
)

const checkUsage = `usage:
  mxguard check spf     --ip IP [--helo NAME] [--mail-from ADDR] [--dns HOST:PORT] [--json]
  mxguard check dkim    [--dns HOST:PORT] [--json] FILE.eml
  mxguard check dmarc   --ip IP [--helo NAME] [--mail-from ADDR] [--dns HOST:PORT] [--json] FILE.eml
  mxguard check message --ip IP [--helo NAME] [--mail-from ADDR] [--hostname NAME] [--dns HOST:PORT] [--json] FILE.eml

Runs the checks the gateway runs, by hand. spf checks the MAIL FROM identity
(or postmaster@HELO when --mail-from is empty: the null reverse-path); dkim
verifies the signatures of FILE.eml; dmarc applies the From domain's policy to
both; message runs all three and prints the Authentication-Results header
mxguard would add (authserv-id --hostname, default this host's name).

  --ip IP          the SMTP client's address
  --helo NAME      the EHLO/HELO name
  --mail-from ADDR the reverse-path, without angle brackets ("" = null)
  --dns HOST:PORT  ask this DNS server (default: /etc/resolv.conf)
  --hostname NAME  authserv-id for the Authentication-Results (message only)
  --json           print one JSON object; its "result" field (per method for
                   message) is the RFC result word

Exit status: 0 when the checks ran (whatever their result), 1 when they could
not (unreadable file, bad DNS server), 2 for usage errors.
`

const (
	// checkTimeout bounds the whole command (every lookup included).
	checkTimeout = 30 * time.Second
	// checkMaxMessage bounds the message file read into memory.
	checkMaxMessage = 64 << 20
)

// checkOpts are the parsed command line of `mxguard check`.
type checkOpts struct {
	method              string
	ip                  netip.Addr
	helo, mailFrom      string
	dns, hostname, file string
	jsonOut             bool
	stdout, stderr      io.Writer
}

// runCheck implements `mxguard check spf|dkim|dmarc|message`.
func runCheck(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, checkUsage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	o := &checkOpts{method: args[0], stdout: stdout, stderr: stderr}
	switch o.method {
	case "spf", "dkim", "dmarc", "message":
	default:
		fmt.Fprintf(stderr, "check: unknown method %q\n\n%s", o.method, checkUsage)
		return 2
	}
	if code := o.parse(args[1:]); code >= 0 {
		return code
	}

	r, err := resolver.New(resolver.Config{Servers: checkServers(o.dns)})
	if err != nil {
		fmt.Fprintf(stderr, "check: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()

	var msg []byte
	if o.file != "" {
		msg, err = checkReadFile(o.file)
		if err != nil {
			fmt.Fprintf(stderr, "check: %v\n", err)
			return 1
		}
	}
	switch o.method {
	case "spf":
		return o.printSPF(o.spf(ctx, r))
	case "dkim":
		dk, err := auth.VerifyDKIM(ctx, r, bytes.NewReader(msg), auth.DKIMOptions{})
		if err != nil {
			fmt.Fprintf(stderr, "check: %s: %v\n", o.file, err)
			return 1
		}
		return o.printDKIM(dk)
	}

	// dmarc and message need all three.
	spf := o.spf(ctx, r)
	dk, err := auth.VerifyDKIM(ctx, r, bytes.NewReader(msg), auth.DKIMOptions{})
	if err != nil {
		fmt.Fprintf(stderr, "check: %s: %v\n", o.file, err)
		return 1
	}
	from, fromDomain, fromErr := auth.ParseHeaderFrom(checkHeaderValues(msg, "From"))
	var dm auth.DMARCResult
	if fromErr != nil {
		dm = auth.DMARCResult{Result: "permerror", Reason: "RFC5322.From: " + fromErr.Error()}
	} else {
		dm = auth.EvaluateDMARC(ctx, r, fromDomain, spf.Result, spf.Domain, dk)
	}
	if o.method == "dmarc" {
		return o.printDMARC(dm, spf, dk, from)
	}
	ar := auth.FormatAuthResults(o.hostname, auth.AuthResSPF{Result: spf.Result, MailFrom: o.mailFromForAR(spf), Helo: o.helo}, dk, dm)
	return o.printMessage(spf, dk, dm, from, fromErr, ar)
}

// parse reads flags and the file argument; it returns -1 to go on or an exit
// code. Flags and the file may come in any order.
func (o *checkOpts) parse(args []string) int {
	fs := flag.NewFlagSet("check "+o.method, flag.ContinueOnError)
	fs.SetOutput(o.stderr)
	fs.Usage = func() { fmt.Fprint(o.stderr, checkUsage) }
	ip := fs.String("ip", "", "client IP address")
	fs.StringVar(&o.helo, "helo", "", "EHLO/HELO name")
	fs.StringVar(&o.mailFrom, "mail-from", "", "reverse-path")
	fs.StringVar(&o.dns, "dns", "", "DNS server HOST:PORT")
	fs.StringVar(&o.hostname, "hostname", "", "authserv-id")
	fs.BoolVar(&o.jsonOut, "json", false, "JSON output")
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}

	if o.dns != "" {
		host, port, err := net.SplitHostPort(o.dns)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			fmt.Fprintf(o.stderr, "check %s: --dns: %q is not HOST:PORT\n", o.method, o.dns)
			return 2
		}
	}
	needFile := o.method != "spf"
	switch {
	case needFile && len(pos) != 1:
		fmt.Fprintf(o.stderr, "check %s: give exactly one message file\n", o.method)
		return 2
	case !needFile && len(pos) != 0:
		fmt.Fprintf(o.stderr, "check spf: unexpected argument %q\n", pos[0])
		return 2
	}
	if needFile {
		o.file = pos[0]
	}
	if o.method != "dkim" {
		a, err := netip.ParseAddr(*ip)
		if err != nil {
			fmt.Fprintf(o.stderr, "check %s: --ip: %q is not an IP address\n", o.method, *ip)
			return 2
		}
		o.ip = a.Unmap()
		if o.mailFrom == "" && o.helo == "" {
			fmt.Fprintf(o.stderr, "check %s: give --mail-from, or --helo for a null reverse-path\n", o.method)
			return 2
		}
	}
	if o.method == "message" && o.hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		o.hostname = h
	}
	return -1
}

func (o *checkOpts) spf(ctx context.Context, r auth.Resolver) auth.SPFResult {
	return auth.CheckSPF(ctx, r, o.ip, o.helo, o.mailFrom, auth.SPFOptions{ReceiverName: o.hostname})
}

// mailFromForAR is smtp.mailfrom: the reverse-path, or nothing for the null
// path (then smtp.helo carries the identity checked).
func (o *checkOpts) mailFromForAR(spf auth.SPFResult) string {
	if spf.Identity == "helo" {
		return ""
	}
	return strings.TrimSuffix(strings.TrimPrefix(o.mailFrom, "<"), ">")
}

func checkServers(dns string) []string {
	if dns == "" {
		return nil
	}
	return []string{dns}
}

func checkReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, checkMaxMessage+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(b) > checkMaxMessage {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, checkMaxMessage)
	}
	return b, nil
}

// checkHeaderValues returns the unfolded values of every header field called
// name (case-insensitive), in order, from a raw message.
func checkHeaderValues(msg []byte, name string) []string {
	var vals []string
	cur := -1 // index in vals of the field being continued, or -1
	for len(msg) > 0 {
		line := msg
		if i := bytes.IndexByte(msg, '\n'); i >= 0 {
			line, msg = msg[:i], msg[i+1:]
		} else {
			msg = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) == 0 {
			break // end of the header section
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur >= 0 {
				vals[cur] += string(line)
			}
			continue
		}
		cur = -1
		k, v, ok := bytes.Cut(line, []byte(":"))
		if ok && strings.EqualFold(strings.TrimSpace(string(k)), name) {
			vals = append(vals, strings.TrimLeft(string(v), " \t"))
			cur = len(vals) - 1
		}
	}
	return vals
}

// checkClean makes text from DNS or the message safe for a terminal.
func checkClean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}

func (o *checkOpts) writeJSON(v any) int {
	enc := json.NewEncoder(o.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		fmt.Fprintf(o.stderr, "check: %v\n", err)
		return 1
	}
	return 0
}

func (o *checkOpts) printSPF(s auth.SPFResult) int {
	if o.jsonOut {
		return o.writeJSON(s)
	}
	w := o.stdout
	fmt.Fprintf(w, "spf: %s\n", s.Result)
	o.spfDetails(s)
	return 0
}

func (o *checkOpts) spfDetails(s auth.SPFResult) {
	w := o.stdout
	ident := o.mailFrom
	if s.Identity == "helo" {
		ident = "postmaster@" + o.helo
	}
	fmt.Fprintf(w, "  identity:    %s (%s)\n", s.Identity, checkClean(ident))
	fmt.Fprintf(w, "  client:      %s helo %s\n", o.ip, checkClean(o.helo))
	fmt.Fprintf(w, "  domain:      %s\n", checkClean(s.Domain))
	if s.Mechanism != "" {
		fmt.Fprintf(w, "  mechanism:   %s\n", checkClean(s.Mechanism))
	}
	fmt.Fprintf(w, "  lookups:     %d\n", s.Lookups)
	if s.Explanation != "" {
		fmt.Fprintf(w, "  explanation: %s\n", checkClean(s.Explanation))
	}
	if s.Reason != "" {
		fmt.Fprintf(w, "  reason:      %s\n", checkClean(s.Reason))
	}
}

// checkDKIMJSON is the --json shape of `check dkim`: the overall word (pass
// when any signature passed, else the first signature's word, none without
// signatures) and every signature.
type checkDKIMJSON struct {
	Result     string            `json:"result"`
	Signatures []auth.DKIMResult `json:"signatures"`
}

func checkDKIMSummary(dk []auth.DKIMResult) string {
	if len(dk) == 0 {
		return "none"
	}
	for _, d := range dk {
		if d.Result == "pass" {
			return "pass"
		}
	}
	return dk[0].Result
}

func (o *checkOpts) printDKIM(dk []auth.DKIMResult) int {
	if o.jsonOut {
		return o.writeJSON(checkDKIMJSON{Result: checkDKIMSummary(dk), Signatures: checkNonNil(dk)})
	}
	fmt.Fprintf(o.stdout, "dkim: %s\n", checkDKIMSummary(dk))
	o.dkimDetails(dk)
	return 0
}

func checkNonNil(dk []auth.DKIMResult) []auth.DKIMResult {
	if dk == nil {
		return []auth.DKIMResult{}
	}
	return dk
}

func (o *checkOpts) dkimDetails(dk []auth.DKIMResult) {
	w := o.stdout
	if len(dk) == 0 {
		fmt.Fprintln(w, "  no DKIM-Signature")
	}
	for i, d := range dk {
		fmt.Fprintf(w, "  [%d] %-9s d=%s s=%s a=%s b=%s", i+1, d.Result, checkClean(d.Domain), checkClean(d.Selector), checkClean(d.Algorithm), checkClean(d.HeaderB))
		if d.Identifier != "" {
			fmt.Fprintf(w, " i=%s", checkClean(d.Identifier))
		}
		if d.BodyLength {
			fmt.Fprint(w, " l=")
			if d.UnsignedContent {
				fmt.Fprint(w, " (unsigned content follows)")
			}
		}
		fmt.Fprintln(w)
		if d.Reason != "" {
			fmt.Fprintf(w, "      reason: %s\n", checkClean(d.Reason))
		}
	}
}

// checkDMARCJSON is the --json shape of `check dmarc`: the DMARC result's
// fields at the top (so "result" is the DMARC word), with its inputs.
type checkDMARCJSON struct {
	auth.DMARCResult
	From string            `json:"from"`
	SPF  auth.SPFResult    `json:"spf"`
	DKIM []auth.DKIMResult `json:"dkim"`
}

func (o *checkOpts) printDMARC(dm auth.DMARCResult, spf auth.SPFResult, dk []auth.DKIMResult, from string) int {
	if o.jsonOut {
		return o.writeJSON(checkDMARCJSON{DMARCResult: dm, From: from, SPF: spf, DKIM: checkNonNil(dk)})
	}
	o.dmarcDetails(dm, from)
	fmt.Fprintf(o.stdout, "  spf:         %s (%s)\n", spf.Result, checkClean(spf.Domain))
	for i, d := range dk {
		fmt.Fprintf(o.stdout, "  dkim[%d]:     %s (d=%s, aligned %s)\n", i+1, d.Result, checkClean(d.Domain), checkYesNo(d.Aligned))
	}
	return 0
}

func (o *checkOpts) dmarcDetails(dm auth.DMARCResult, from string) {
	w := o.stdout
	fmt.Fprintf(w, "dmarc: %s\n", dm.Result)
	if from != "" {
		fmt.Fprintf(w, "  from:        %s\n", checkClean(from))
	}
	if dm.Domain != "" {
		fmt.Fprintf(w, "  from domain: %s\n", checkClean(dm.Domain))
	}
	if dm.PolicyDomain != "" {
		t := ""
		if dm.Testing {
			t = ", t=y: the owner is testing and asks not to apply it"
		}
		fmt.Fprintf(w, "  policy:      %s (record at _dmarc.%s%s)\n", dm.Policy, checkClean(dm.PolicyDomain), t)
	}
	if dm.OrgDomain != "" {
		fmt.Fprintf(w, "  org domain:  %s\n", checkClean(dm.OrgDomain))
	}
	if dm.Result == "pass" || dm.Result == "fail" {
		fmt.Fprintf(w, "  aligned:     spf %s, dkim %s\n", checkYesNo(dm.SPFAligned), checkYesNo(dm.DKIMAligned))
	}
	if dm.Reason != "" {
		fmt.Fprintf(w, "  reason:      %s\n", checkClean(dm.Reason))
	}
}

func checkYesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// checkMessageJSON is the --json shape of `check message`: one object per
// method, each with its "result" word, and the header we would add.
type checkMessageJSON struct {
	From                  string           `json:"from"`
	FromError             string           `json:"from_error,omitempty"`
	SPF                   auth.SPFResult   `json:"spf"`
	DKIM                  checkDKIMJSON    `json:"dkim"`
	DMARC                 auth.DMARCResult `json:"dmarc"`
	AuthenticationResults string           `json:"authentication_results"`
}

func (o *checkOpts) printMessage(spf auth.SPFResult, dk []auth.DKIMResult, dm auth.DMARCResult, from string, fromErr error, ar string) int {
	if o.jsonOut {
		out := checkMessageJSON{From: from, SPF: spf, DKIM: checkDKIMJSON{Result: checkDKIMSummary(dk), Signatures: checkNonNil(dk)}, DMARC: dm,
			AuthenticationResults: ar}
		if fromErr != nil {
			out.FromError = fromErr.Error()
		}
		return o.writeJSON(out)
	}
	w := o.stdout
	fmt.Fprintf(w, "spf: %s\n", spf.Result)
	o.spfDetails(spf)
	fmt.Fprintf(w, "dkim: %s\n", checkDKIMSummary(dk))
	o.dkimDetails(dk)
	o.dmarcDetails(dm, from)
	fmt.Fprintf(w, "\nAuthentication-Results: %s\n", strings.ReplaceAll(ar, "\r\n", "\n"))
	return 0
}
