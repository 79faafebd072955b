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
	"net/mail"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	tea "github.com/charmbracelet/bubbletea"
	"golang.org/x/term"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/quarantine"
)

const quarantineUsage = `usage: mxguard quarantine COMMAND [flags] [--config FILE]

  list     [--since DUR|DATE] [--reason CODE] [--from S] [--rcpt S] [--domain D]
           [--status held|releasing|released|deleted|damaged] [--limit N] [--cursor C | --page N] [--json]
           items newest first, as a table (or JSON)
  show     ID [--raw] [--json]      summary, verdict and reasons, auth results, headers; --raw: the whole message
  release  ID... [--by NAME] [--allow-sender] [--force]
           deliver to the stored recipients, exactly once; --allow-sender also adds
           the sender to the policy's allowed senders (policy.allow_file); --force
           takes back the claim of a release that died (item stuck "releasing")
  delete   ID... [--by NAME]        mark deleted and drop the message (metadata kept until purged)
  purge    [--older-than DUR]       remove items older than quarantine.retention (or DUR)
  stats    [--since DUR|DATE] [--json]   counts by status, reason and day
  review   [--by NAME] [--status S]  walk through held items interactively

Exit status: 0 ok, 1 failure (unknown id, damaged item, unreachable store), 2 usage.
`

// Command timeouts: an unreachable store must give an error, not a hang.
const (
	qReadTimeout    = time.Minute
	qReleaseTimeout = 15 * time.Minute
	qPurgeTimeout   = time.Hour
	qMaxScan        = 1_000_000 // stats/--page bound: items walked at most
	qMaxHeaderShow  = 64 << 10  // show: bytes of header section displayed
	qMaxAllowBytes  = 16 << 20  // allowed-senders file read back at most
)

// runQuarantine implements `mxguard quarantine ...`.
func runQuarantine(args []string, stdout, stderr io.Writer, stdin io.Reader) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, quarantineUsage)
		return 2
	}
	q := &qcmd{stdout: stdout, stderr: stderr, stdin: stdin, name: args[0]}
	switch args[0] {
	case "list":
		return q.list(args[1:])
	case "show":
		return q.show(args[1:])
	case "release":
		return q.release(args[1:])
	case "delete":
		return q.delete(args[1:])
	case "purge":
		return q.purge(args[1:])
	case "stats":
		return q.stats(args[1:])
	case "review":
		return q.review(args[1:])
	case "help", "-h", "--help":
		fmt.Fprint(stdout, quarantineUsage)
		return 0
	}
	fmt.Fprintf(stderr, "quarantine: unknown command %q\n\n%s", args[0], quarantineUsage)
	return 2
}

// qcmd carries one quarantine subcommand's I/O and store.
type qcmd struct {
	stdout, stderr io.Writer
	stdin          io.Reader
	name           string
	cfg            *config.Config
	store          quarantine.Admin
}

// flags returns the subcommand's flag set with the shared --config flag.
func (q *qcmd) flags() (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("quarantine "+q.name, flag.ContinueOnError)
	fs.SetOutput(q.stderr)
	fs.Usage = func() { fmt.Fprint(q.stderr, quarantineUsage) }
	return fs, fs.String("config", config.DefaultPath, "configuration file")
}

func (q *qcmd) fail(format string, a ...any) int {
	fmt.Fprintf(q.stderr, "quarantine %s: %s\n", q.name, fmt.Sprintf(format, a...))
	return 1
}

func (q *qcmd) usage(format string, a ...any) int {
	fmt.Fprintf(q.stderr, "quarantine %s: %s\n", q.name, fmt.Sprintf(format, a...))
	return 2
}

// open loads the config and opens the store, checking that it answers so
// that an unreachable store is reported as such, up front.
func (q *qcmd) open(path string) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	s, err := openQuarantineStore(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := s.List(ctx, quarantine.Filter{Limit: 1}); err != nil {
		closeQuarantineStore(s)
		return fmt.Errorf("quarantine store unreachable (%s): %w", qDescribeStore(cfg), err)
	}
	q.cfg, q.store = cfg, s
	return nil
}

func (q *qcmd) close() {
	if q.store != nil {
		closeQuarantineStore(q.store)
	}
}

func qDescribeStore(cfg *config.Config) string {
	if cfg.Quarantine.Backend == "redis" {
		return "redis " + strings.Join(cfg.Quarantine.Redis.Addrs, ",")
	}
	return "dir " + cfg.Quarantine.Dir
}

// openQuarantineStore opens the configured backend. The result implements
// io.Closer (closeQuarantineStore). It does not contact Redis: serve must
// start, and tempfail quarantined mail, while Redis is down.
func openQuarantineStore(cfg *config.Config) (quarantine.Admin, error) {
	qc := cfg.Quarantine
	switch qc.Backend {
	case "", "dir":
		return quarantine.OpenDir(qc.Dir, quarantine.DirOptions{MaxMessageBytes: qc.MaxMessageBytes})
	case "redis":
		c := newRedisClient(qc.Redis)
		s, err := quarantine.NewRedis(c, quarantine.RedisOptions{
			KeyPrefix: qc.KeyPrefix, Retention: qc.Retention, MaxMessageBytes: qc.MaxMessageBytes,
		})
		if err != nil {
			c.Close()
			return nil, err
		}
		return &redisQuarantine{Redis: s, c: c}, nil
	}
	return nil, fmt.Errorf("quarantine.backend: unknown backend %q (dir or redis)", qc.Backend)
}

// redisQuarantine owns the client it was opened with.
type redisQuarantine struct {
	*quarantine.Redis
	c io.Closer
}

func (r *redisQuarantine) Close() error { return r.c.Close() }

func closeQuarantineStore(s quarantine.Store) {
	if c, ok := s.(io.Closer); ok {
		_ = c.Close()
	}
}

// ---- list ----

func (q *qcmd) list(args []string) int {
	fs, cfgPath := q.flags()
	since := fs.String("since", "", "received at or after: a duration back (24h, 7d) or a date (2006-01-02, RFC 3339)")
	reason := fs.String("reason", "", "reason code")
	from := fs.String("from", "", "sender (substring of envelope or header From)")
	rcpt := fs.String("rcpt", "", "recipient (substring)")
	domain := fs.String("domain", "", "sender or recipient domain")
	status := fs.String("status", "", "held, releasing, released, deleted or damaged")
	limit := fs.Int("limit", 50, "items per page (at most 1000)")
	cursor := fs.String("cursor", "", "continue after this cursor (printed at the end of the previous page)")
	page := fs.Int("page", 0, "page number, from 1 (walks the earlier pages)")
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		return q.usage("unexpected argument %q", pos[0])
	}
	f := quarantine.Filter{Reason: *reason, From: *from, Rcpt: *rcpt, Domain: *domain, Status: *status, Cursor: *cursor}
	if f.Since, err = qParseSince(*since, time.Now()); err != nil {
		return q.usage("--since: %v", err)
	}
	if *limit < 1 || *limit > quarantine.MaxLimit {
		return q.usage("--limit must be 1-%d", quarantine.MaxLimit)
	}
	if *page < 0 || (*page > 0 && *cursor != "") {
		return q.usage("--page must be positive and cannot be combined with --cursor")
	}
	f.Limit = *limit
	if err := q.open(*cfgPath); err != nil {
		return q.fail("%v", err)
	}
	defer q.close()
	ctx, cancel := context.WithTimeout(context.Background(), qReadTimeout)
	defer cancel()

	items, next, err := q.store.List(ctx, f)
	for p := 1; err == nil && p < *page; p++ {
		if next == "" {
			items = nil
			break
		}
		f.Cursor = next
		items, next, err = q.store.List(ctx, f)
	}
	if err != nil {
		return q.fail("%v", err)
	}
	if *asJSON {
		if items == nil {
			items = []quarantine.Meta{}
		}
		return q.writeJSON(struct {
			Items []quarantine.Meta `json:"items"`
			Next  string            `json:"next,omitempty"`
		}{items, next})
	}
	if len(items) == 0 {
		fmt.Fprintln(q.stderr, "no matching items")
		return 0
	}
	tw := tabwriter.NewWriter(q.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRECEIVED (UTC)\tSTATUS\tFROM\tTO\tSUBJECT\tREASONS")
	for _, m := range items {
		if m.Status == quarantine.StatusDamaged {
			fmt.Fprintf(tw, "%s\t%s\t%s\t\t\t%s\t\n", m.ID, m.Received.UTC().Format("2006-01-02 15:04"), m.Status,
				qCell(m.Damaged, 60))
			continue
		}
		to := ""
		if len(m.Rcpts) > 0 {
			to = m.Rcpts[0]
			if len(m.Rcpts) > 1 {
				to += fmt.Sprintf(" +%d", len(m.Rcpts)-1)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Received.UTC().Format("2006-01-02 15:04"), m.Status,
			qCell(qOrNull(m.MailFrom), 32), qCell(to, 32), qCell(m.Subject, 40), qCell(qReasonCodes(m), 40))
	}
	tw.Flush()
	if next != "" {
		fmt.Fprintf(q.stderr, "more items: add --cursor %s\n", next)
	}
	return 0
}

// qParseSince accepts a duration back from now ("24h", "7d") or a date or
// timestamp ("2006-01-02", RFC 3339).
func qParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n >= 0 && n < 100_000 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither a duration (24h, 7d) nor a date (2006-01-02 or RFC 3339)", s)
}

func qReasonCodes(m quarantine.Meta) string {
	codes := make([]string, len(m.Decision.Reasons))
	for i, r := range m.Decision.Reasons {
		codes[i] = r.Code
	}
	return strings.Join(codes, ",")
}

func qOrNull(addr string) string {
	if addr == "" {
		return "<>"
	}
	return addr
}

// qCell makes one table cell: escaped, tabs and newlines gone, truncated.
func qCell(s string, max int) string {
	s = qEscape(s, false)
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		s = string(r[:max-1]) + "…"
	}
	return s
}

func (q *qcmd) writeJSON(v any) int {
	enc := json.NewEncoder(q.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return q.fail("%v", err)
	}
	return 0
}

// ---- show ----

func (q *qcmd) show(args []string) int {
	fs, cfgPath := q.flags()
	raw := fs.Bool("raw", false, "print the whole message (control characters escaped on a terminal)")
	asJSON := fs.Bool("json", false, "print the metadata as JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		return q.usage("want exactly one ID")
	}
	id := pos[0]
	if !quarantine.ValidID(id) {
		return q.fail("%v", quarantine.CheckID(id))
	}
	if err := q.open(*cfgPath); err != nil {
		return q.fail("%v", err)
	}
	defer q.close()
	ctx, cancel := context.WithTimeout(context.Background(), qReadTimeout)
	defer cancel()
	m, err := q.store.Get(ctx, id)
	if err != nil {
		return q.fail("%v", qDescribeErr(id, err))
	}
	if *asJSON {
		return q.writeJSON(m)
	}
	if *raw {
		rc, err := q.store.Open(ctx, id)
		if err != nil {
			return q.fail("%v", qDescribeErr(id, err))
		}
		defer rc.Close()
		if !qIsTerminal(q.stdout) {
			if _, err := io.Copy(q.stdout, rc); err != nil {
				return q.fail("%v", err)
			}
			return 0
		}
		return q.copyEscaped(rc)
	}
	qWriteSummary(q.stdout, m)
	fmt.Fprintln(q.stdout, "\nHeaders:")
	rc, err := q.store.Open(ctx, id)
	if err != nil {
		fmt.Fprintf(q.stdout, "  (%s)\n", qEscape(qDescribeErr(id, err).Error(), false))
		return 0
	}
	defer rc.Close()
	hdr, truncated, err := qReadHeader(rc, qMaxHeaderShow)
	if err != nil {
		return q.fail("%s: reading message: %v", id, err)
	}
	for _, line := range strings.Split(strings.TrimRight(hdr, "\r\n"), "\n") {
		fmt.Fprintf(q.stdout, "  %s\n", qEscape(strings.TrimSuffix(line, "\r"), true))
	}
	if truncated {
		fmt.Fprintf(q.stdout, "  ... (header section longer than %d bytes; see --raw)\n", qMaxHeaderShow)
	}
	return 0
}

// qDescribeErr turns store errors into what a reviewer should read.
func qDescribeErr(id string, err error) error {
	switch {
	case errors.Is(err, quarantine.ErrNotFound):
		return fmt.Errorf("%s: no such item (unknown id, or purged): %w", id, err)
	case errors.Is(err, quarantine.ErrDamaged):
		return fmt.Errorf("%s: damaged metadata, the item cannot be shown or released (its files stay until purged): %w", id, err)
	}
	return err
}

// copyEscaped writes a message to a terminal with control characters made
// visible, line by line.
func (q *qcmd) copyEscaped(r io.Reader) int {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			line = strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
			fmt.Fprintln(q.stdout, qEscape(line, true))
		}
		if errors.Is(err, io.EOF) {
			return 0
		}
		if err != nil {
			return q.fail("%v", err)
		}
	}
}

// qReadHeader returns the header section (up to the blank line), at most max
// bytes of it.
func qReadHeader(r io.Reader, max int) (string, bool, error) {
	br := bufio.NewReader(io.LimitReader(r, int64(max)+1))
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		if strings.TrimRight(line, "\r\n") == "" && (line != "" || err != nil) {
			return b.String(), false, nil
		}
		b.WriteString(line)
		if b.Len() > max {
			return b.String()[:max], true, nil
		}
		if errors.Is(err, io.EOF) {
			return b.String(), false, nil
		}
		if err != nil {
			return "", false, err
		}
	}
}

// qWriteSummary prints an item's metadata for a reviewer. Everything that
// came from the network is escaped.
func qWriteSummary(w io.Writer, m quarantine.Meta) {
	e := func(s string) string { return qEscape(s, false) }
	p := func(label, value string) {
		if value != "" {
			fmt.Fprintf(w, "%-12s %s\n", label+":", value)
		}
	}
	p("ID", m.ID)
	p("Status", m.Status)
	p("Received", m.Received.UTC().Format("2006-01-02 15:04:05 UTC"))
	if m.TxID != "" {
		p("Transaction", e(m.TxID))
	}
	client := e(m.ClientIP)
	var extra []string
	if m.Helo != "" {
		extra = append(extra, "helo "+e(m.Helo))
	}
	if m.PTR != "" {
		extra = append(extra, "ptr "+e(m.PTR))
	}
	if m.TLS != "" {
		extra = append(extra, e(m.TLS))
	} else {
		extra = append(extra, "no TLS")
	}
	p("Client", client+" ("+strings.Join(extra, ", ")+")")
	p("From", e(qOrNull(m.MailFrom)))
	p("Header From", e(m.HeaderFrom))
	rcpts := make([]string, len(m.Rcpts))
	for i, r := range m.Rcpts {
		rcpts[i] = e(r)
	}
	p("To", strings.Join(rcpts, ", "))
	p("Subject", e(m.Subject))
	p("Message-ID", e(m.MessageID))
	p("Size", fmt.Sprintf("%d bytes", m.Size))
	p("Route", e(m.Route))

	d := m.Decision
	verdict := e(d.Action)
	if d.DryRun {
		verdict += " (dry run)"
	}
	fmt.Fprintf(w, "\nVerdict:     %s (decision %s, policy revision %s)\n", verdict, e(d.DecisionID), e(d.PolicyRevision))
	for _, r := range d.Reasons {
		line := "  - " + e(r.Code)
		if r.Msg != "" {
			line += ": " + e(r.Msg)
		}
		fmt.Fprintln(w, line)
		if r.Title != "" {
			fmt.Fprintf(w, "      %s\n", e(r.Title))
		}
		if r.Description != "" {
			fmt.Fprintf(w, "      %s\n", e(r.Description))
		}
	}
	if len(m.Auth) > 0 && string(m.Auth) != "null" {
		fmt.Fprintln(w, "\nAuth:")
		var buf bytes.Buffer
		if json.Indent(&buf, m.Auth, "  ", "  ") == nil {
			fmt.Fprintf(w, "  %s\n", qEscape(buf.String(), true))
		} else {
			fmt.Fprintf(w, "  %s\n", e(string(m.Auth)))
		}
	}
	if len(m.History) > 0 {
		fmt.Fprintln(w, "\nHistory:")
		for _, ev := range m.History {
			line := fmt.Sprintf("  %s  %-15s by %s", ev.At.UTC().Format("2006-01-02 15:04:05"), e(ev.Action), e(ev.By))
			if ev.Note != "" {
				line += "  (" + e(ev.Note) + ")"
			}
			fmt.Fprintln(w, line)
		}
	}
}

// qEscape makes hostile text safe to print on a terminal: C0 and C1 control
// characters, DEL, invalid UTF-8 and bidirectional overrides (which can
// make text display in another order than it reads) become visible escapes.
// multiline keeps newlines and tabs.
func qEscape(s string, multiline bool) string {
	clean := true
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || r == utf8.RuneError || qIsBidi(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case multiline && (r == '\n' || r == '\t'):
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case (r >= 0x80 && r <= 0x9f) || qIsBidi(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

func qIsBidi(r rune) bool {
	return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c
}

func qIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// ---- release / delete ----

// qDefaultReviewer is the OS user running the command.
func qDefaultReviewer() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

// checkTargets validates the IDs and the reviewer name of release and
// delete before the store is opened.
func (q *qcmd) checkTargets(ids []string, by string) (int, bool) {
	if len(ids) == 0 {
		return q.usage("want at least one ID"), false
	}
	if err := quarantine.CheckBy(by); err != nil {
		return q.usage("--by: %v", err), false
	}
	for _, id := range ids {
		if !quarantine.ValidID(id) {
			return q.fail("%v", quarantine.CheckID(id)), false
		}
	}
	return 0, true
}

func (q *qcmd) release(args []string) int {
	fs, cfgPath := q.flags()
	by := fs.String("by", qDefaultReviewer(), "reviewer name recorded in history and the X-MXGuard-Released header")
	allow := fs.Bool("allow-sender", false, "also add the sender to the policy's allowed senders (policy.allow_file)")
	force := fs.Bool("force", false, "take back a release claim left by a release that died (older than 30m); the message may then be delivered twice")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if code, ok := q.checkTargets(pos, *by); !ok {
		return code
	}
	if err := q.open(*cfgPath); err != nil {
		return q.fail("%v", err)
	}
	defer q.close()
	allowFile := ""
	if *allow {
		if allowFile, err = allowedSendersPath(q.cfg); err != nil {
			return q.fail("%v", err)
		}
	}
	rl, err := newRelay(q.cfg)
	if err != nil {
		return q.fail("relay: %v", err)
	}
	defer rl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), qReleaseTimeout)
	defer cancel()
	status := 0
	for _, id := range pos {
		if *force {
			if m, err := q.store.Get(ctx, id); err == nil && m.Status == quarantine.StatusReleasing {
				if _, err := quarantine.ResetClaim(ctx, q.store, id, *by, quarantine.StaleClaimAge); err != nil {
					status = q.fail("%v", err)
					continue
				}
				fmt.Fprintf(q.stderr, "quarantine release: %s: took back a stale release claim; the earlier attempt may have delivered it already\n", id)
			}
		}
		if err := quarantine.Release(ctx, q.store, id, *by, rl); err != nil {
			status = q.fail("%v", qDescribeErr(id, err))
			continue
		}
		m, err := q.store.Get(ctx, id)
		if err != nil {
			fmt.Fprintf(q.stdout, "released %s\n", id)
			continue
		}
		fmt.Fprintf(q.stdout, "released %s to %d recipient(s)\n", id, len(m.Rcpts))
		if *allow {
			sender, added, err := allowSender(allowFile, m)
			switch {
			case err != nil:
				status = q.fail("%s: released, but the sender was not allowed: %v", id, err)
			case added:
				fmt.Fprintf(q.stdout, "added %s to the allowed senders in %s\n", qEscape(sender, false), allowFile)
			default:
				fmt.Fprintf(q.stdout, "%s is already an allowed sender\n", qEscape(sender, false))
			}
		}
	}
	return status
}

func (q *qcmd) delete(args []string) int {
	fs, cfgPath := q.flags()
	by := fs.String("by", qDefaultReviewer(), "reviewer name recorded in history")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if code, ok := q.checkTargets(pos, *by); !ok {
		return code
	}
	if err := q.open(*cfgPath); err != nil {
		return q.fail("%v", err)
	}
	defer q.close()
	ctx, cancel := context.WithTimeout(context.Background(), qReadTimeout)
	defer cancel()
	status := 0
	for _, id := range pos {
		if err := quarantine.Delete(ctx, q.store, id, *by); err != nil {
			status = q.fail("%v", qDescribeErr(id, err))
			continue
		}
		fmt.Fprintf(q.stdout, "deleted %s\n", id)
	}
	return status
}

// ---- allowed senders ----

// allowedSendersPath is policy.allow_file, or data/allowed_senders.json in
// the rules directory.
func allowedSendersPath(cfg *config.Config) (string, error) {
	if cfg.Policy.AllowFile != "" {
		return cfg.Policy.AllowFile, nil
	}
	if cfg.Policy.Rules != "" {
		return filepath.Join(cfg.Policy.Rules, "data", "allowed_senders.json"), nil
	}
	return "", errors.New("--allow-sender: the shipped rules are in use (policy.rules is empty): set policy.allow_file to the allowed-senders file your policy reads")
}

// qSenderOf is the address --allow-sender adds: the envelope sender, else
// the header From address.
func qSenderOf(m quarantine.Meta) (string, error) {
	addr := m.MailFrom
	if addr == "" && m.HeaderFrom != "" {
		if a, err := mail.ParseAddress(m.HeaderFrom); err == nil {
			addr = a.Address
		}
	}
	addr = strings.ToLower(strings.TrimSpace(addr))
	if addr == "" {
		return "", errors.New("the item has no sender address (null sender, no usable From)")
	}
	if len(addr) > 254 || !strings.Contains(addr, "@") || strings.ContainsFunc(addr, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "", fmt.Errorf("sender %q is not a plain address", qEscape(addr, false))
	}
	return addr, nil
}

// allowSender adds the item's sender to the allowed-senders file, a JSON
// list of addresses and domains (the policy reads it as
// data.mxguard.allowed_senders). The file is rewritten atomically (temp
// file, fsync, rename, directory fsync) under a flock on its directory, so
// two reviewers adding at once both get their entry in.
func allowSender(path string, m quarantine.Meta) (string, bool, error) {
	sender, err := qSenderOf(m)
	if err != nil {
		return "", false, err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return sender, false, err
	}
	d, err := os.Open(dir)
	if err != nil {
		return sender, false, err
	}
	defer d.Close()
	if err := syscall.Flock(int(d.Fd()), syscall.LOCK_EX); err != nil {
		return sender, false, fmt.Errorf("lock %s: %w", dir, err)
	}
	defer syscall.Flock(int(d.Fd()), syscall.LOCK_UN)

	list := []string{}
	mode := os.FileMode(0o644)
	if f, err := os.Open(path); err == nil {
		fi, _ := f.Stat()
		if fi != nil {
			mode = fi.Mode().Perm()
		}
		b, err := io.ReadAll(io.LimitReader(f, qMaxAllowBytes+1))
		f.Close()
		if err != nil {
			return sender, false, err
		}
		if len(b) > qMaxAllowBytes {
			return sender, false, fmt.Errorf("%s is larger than %d bytes", path, qMaxAllowBytes)
		}
		if len(bytes.TrimSpace(b)) > 0 {
			if err := json.Unmarshal(b, &list); err != nil {
				return sender, false, fmt.Errorf("%s: want a JSON list of addresses and domains: %w", path, err)
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return sender, false, err
	}
	for _, s := range list {
		if strings.EqualFold(s, sender) {
			return sender, false, nil
		}
	}
	list = append(list, sender)
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return sender, false, err
	}
	b = append(b, '\n')
	tmp, err := os.CreateTemp(dir, ".allowed_senders-*.tmp")
	if err != nil {
		return sender, false, err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Chmod(mode)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return sender, false, err
	}
	if err := d.Sync(); err != nil {
		return sender, false, err
	}
	return sender, true, nil
}

// ---- purge / stats ----

func (q *qcmd) purge(args []string) int {
	fs, cfgPath := q.flags()
	olderThan := fs.String("older-than", "", "age to purge (default quarantine.retention); 7d, 720h")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		return q.usage("unexpected argument %q", pos[0])
	}
	if err := q.open(*cfgPath); err != nil {
		return q.fail("%v", err)
	}
	defer q.close()
	retention := q.cfg.Quarantine.Retention
	if *olderThan != "" {
		now := time.Now()
		t, err := qParseSince(*olderThan, now)
		if err != nil || t.IsZero() || t.After(now) {
			return q.usage("--older-than: want a duration such as 7d or 720h")
		}
		retention = now.Sub(t)
	}
	if retention <= 0 {
		fmt.Fprintln(q.stdout, "retention is 0 (keep forever): nothing purged")
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), qPurgeTimeout)
	defer cancel()
	n, err := quarantine.Sweep(ctx, q.store, retention, time.Now)
	if err != nil {
		return q.fail("%v (%d items purged before the error)", err, n)
	}
	fmt.Fprintf(q.stdout, "purged %d item(s) older than %s\n", n, retention)
	return 0
}

func (q *qcmd) stats(args []string) int {
	fs, cfgPath := q.flags()
	since := fs.String("since", "", "only items received since (24h, 7d, 2006-01-02)")
	asJSON := fs.Bool("json", false, "JSON output")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		return q.usage("unexpected argument %q", pos[0])
	}
	f := quarantine.Filter{Limit: quarantine.MaxLimit}
	if f.Since, err = qParseSince(*since, time.Now()); err != nil {
		return q.usage("--since: %v", err)
	}
	if err := q.open(*cfgPath); err != nil {
		return q.fail("%v", err)
	}
	defer q.close()
	ctx, cancel := context.WithTimeout(context.Background(), qPurgeTimeout)
	defer cancel()
	st := qStats{Status: map[string]int{}, Reason: map[string]int{}, Day: map[string]int{}}
	for scanned := 0; scanned < qMaxScan; {
		items, next, err := q.store.List(ctx, f)
		if err != nil {
			return q.fail("%v", err)
		}
		for _, m := range items {
			st.Total++
			st.Status[m.Status]++
			for _, r := range m.Decision.Reasons {
				st.Reason[r.Code]++
			}
			st.Day[m.Received.UTC().Format("2006-01-02")]++
		}
		scanned += len(items)
		if next == "" {
			break
		}
		f.Cursor = next
	}
	if *asJSON {
		return q.writeJSON(st)
	}
	fmt.Fprintf(q.stdout, "%d item(s)\n", st.Total)
	tw := tabwriter.NewWriter(q.stdout, 0, 0, 2, ' ', 0)
	section := func(title string, m map[string]int, byKey bool) {
		if len(m) == 0 {
			return
		}
		fmt.Fprintf(tw, "\n%s\tCOUNT\n", title)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool {
			if byKey || m[keys[i]] == m[keys[j]] {
				return keys[i] < keys[j]
			}
			return m[keys[i]] > m[keys[j]]
		})
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%d\n", qCell(k, 60), m[k])
		}
	}
	section("STATUS", st.Status, false)
	section("REASON", st.Reason, false)
	section("DAY (UTC)", st.Day, true)
	tw.Flush()
	return 0
}

type qStats struct {
	Total  int            `json:"total"`
	Status map[string]int `json:"status"`
	Reason map[string]int `json:"reason"`
	Day    map[string]int `json:"day"`
}

// ---- review ----

// qReviewMaxItems bounds the items one review session loads.
const qReviewMaxItems = 10_000

// qMaxViewBytes bounds the message text loaded for the full-message view.
const qMaxViewBytes = 4 << 20

func (q *qcmd) review(args []string) int {
	fs, cfgPath := q.flags()
	by := fs.String("by", qDefaultReviewer(), "reviewer name recorded in history")
	status := fs.String("status", quarantine.StatusHeld, "which items to walk through")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		return q.usage("unexpected argument %q", pos[0])
	}
	if err := quarantine.CheckBy(*by); err != nil {
		return q.usage("--by: %v", err)
	}
	if q.stdin == nil {
		return q.usage("review needs an interactive input")
	}
	if err := q.open(*cfgPath); err != nil {
		return q.fail("%v", err)
	}
	defer q.close()
	rl, err := newRelay(q.cfg)
	if err != nil {
		return q.fail("relay: %v", err)
	}
	defer rl.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lctx, lcancel := context.WithTimeout(ctx, qReadTimeout)
	items, err := loadReviewItems(lctx, q.store, *status)
	lcancel()
	if err != nil {
		return q.fail("%v", err)
	}
	if len(items) == 0 {
		fmt.Fprintf(q.stdout, "no %s items to review\n", *status)
		return 0
	}
	m := newReviewModel(ctx, q.store, rl, *by, items)
	opts := []tea.ProgramOption{tea.WithInput(q.stdin), tea.WithOutput(q.stdout), tea.WithContext(ctx)}
	if qIsTerminal(q.stdout) {
		opts = append(opts, tea.WithAltScreen())
	}
	final, err := tea.NewProgram(m, opts...).Run()
	if fm, ok := final.(*reviewModel); ok {
		fmt.Fprintf(q.stdout, "reviewed %d of %d item(s): %d released, %d deleted, %d skipped\n",
			fm.seen(), len(fm.items), fm.released, fm.deleted, fm.skipped)
	}
	if err != nil {
		return q.fail("%v", err)
	}
	return 0
}

func loadReviewItems(ctx context.Context, s quarantine.Store, status string) ([]quarantine.Meta, error) {
	f := quarantine.Filter{Status: status, Limit: quarantine.MaxLimit}
	var all []quarantine.Meta
	for len(all) < qReviewMaxItems {
		items, next, err := s.List(ctx, f)
		if err != nil {
			return nil, err
		}
		all = append(all, items...)
		if next == "" {
			break
		}
		f.Cursor = next
	}
	return all, nil
}

type reviewMode int

const (
	modeSummary reviewMode = iota
	modeMessage
	modeConfirm
)

// reviewModel is the bubbletea model of `quarantine review`. Store and relay
// calls run as tea.Cmds (off the UI loop); their results come back as
// reviewDoneMsg and reviewBodyMsg.
type reviewModel struct {
	ctx     context.Context
	store   quarantine.Admin
	relay   quarantine.Deliverer
	by      string
	items   []quarantine.Meta
	i       int
	maxSeen int

	mode    reviewMode
	pending string // "release" or "delete" while confirming
	busy    bool
	body    []string
	bodyID  string
	scroll  int
	height  int
	status  string

	released, deleted, skipped int
}

type reviewDoneMsg struct {
	id, action string
	meta       quarantine.Meta
	err        error
}

type reviewBodyMsg struct {
	id    string
	lines []string
	err   error
}

func newReviewModel(ctx context.Context, s quarantine.Admin, d quarantine.Deliverer, by string, items []quarantine.Meta) *reviewModel {
	return &reviewModel{ctx: ctx, store: s, relay: d, by: by, items: items, height: 24}
}

func (m *reviewModel) seen() int { return min(m.maxSeen+1, len(m.items)) }

func (m *reviewModel) Init() tea.Cmd { return nil }

func (m *reviewModel) cur() *quarantine.Meta { return &m.items[m.i] }

func (m *reviewModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.height = max(msg.Height, 5)
		return m, nil
	case reviewDoneMsg:
		m.busy = false
		if msg.err != nil {
			m.status = "error: " + qEscape(qDescribeErr(msg.id, msg.err).Error(), false)
			if msg.meta.ID != "" {
				m.replace(msg.meta)
			}
			return m, nil
		}
		m.replace(msg.meta)
		if msg.action == "release" {
			m.released++
			m.status = fmt.Sprintf("released %s to %d recipient(s)", msg.id, len(msg.meta.Rcpts))
		} else {
			m.deleted++
			m.status = "deleted " + msg.id
		}
		return m.next()
	case reviewBodyMsg:
		m.busy = false
		if msg.err != nil {
			m.status = "error: " + qEscape(qDescribeErr(msg.id, msg.err).Error(), false)
			return m, nil
		}
		m.body, m.bodyID, m.scroll, m.mode = msg.lines, msg.id, 0, modeMessage
		return m, nil
	case tea.KeyMsg:
		return m.key(msg.String())
	}
	return m, nil
}

// replace updates the loaded copy of an item after a store change.
func (m *reviewModel) replace(meta quarantine.Meta) {
	for i := range m.items {
		if m.items[i].ID == meta.ID {
			m.items[i] = meta
		}
	}
}

func (m *reviewModel) key(k string) (tea.Model, tea.Cmd) {
	if k == "ctrl+c" {
		return m, tea.Quit
	}
	if m.busy {
		m.status = "busy, please wait..."
		return m, nil
	}
	switch m.mode {
	case modeConfirm:
		action := m.pending
		m.mode, m.pending = modeSummary, ""
		if k != "y" && k != "Y" {
			m.status = action + " cancelled"
			return m, nil
		}
		m.busy = true
		m.status = action + " " + m.cur().ID + "..."
		return m, m.act(action, m.cur().ID)
	case modeMessage:
		page := max(m.height-4, 1)
		switch k {
		case "j", "down":
			m.scroll++
		case "k", "up":
			m.scroll--
		case " ", "pgdown", "f":
			m.scroll += page
		case "b", "pgup":
			m.scroll -= page
		case "g", "home":
			m.scroll = 0
		case "G", "end":
			m.scroll = len(m.body)
		case "v", "m", "esc", "backspace":
			m.mode = modeSummary
			return m, nil
		case "q":
			return m, tea.Quit
		case "r", "d", "s", "n", "p":
			m.mode = modeSummary
			return m.key(k)
		}
		m.scroll = max(0, min(m.scroll, len(m.body)-page))
		return m, nil
	}
	switch k {
	case "q", "esc":
		return m, tea.Quit
	case "s", "n", "right", "enter":
		if m.cur().Status == quarantine.StatusHeld {
			m.skipped++
		}
		m.status = ""
		return m.next()
	case "p", "left":
		if m.i > 0 {
			m.i--
		}
		m.status = ""
		return m, nil
	case "v", "m":
		if m.bodyID == m.cur().ID {
			m.mode, m.scroll = modeMessage, 0
			return m, nil
		}
		m.busy = true
		m.status = "loading message..."
		return m, m.loadBody(m.cur().ID)
	case "r", "d":
		action := map[string]string{"r": "release", "d": "delete"}[k]
		if st := m.cur().Status; st != quarantine.StatusHeld && !(action == "delete" && st == quarantine.StatusReleased) {
			m.status = fmt.Sprintf("cannot %s: item is %s", action, st)
			return m, nil
		}
		m.mode, m.pending = modeConfirm, action
		return m, nil
	}
	return m, nil
}

// next moves to the following item; past the last one the review ends.
func (m *reviewModel) next() (tea.Model, tea.Cmd) {
	if m.i+1 >= len(m.items) {
		return m, tea.Quit
	}
	m.i++
	m.maxSeen = max(m.maxSeen, m.i)
	return m, nil
}

func (m *reviewModel) act(action, id string) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(m.ctx, qReleaseTimeout)
		defer cancel()
		var err error
		if action == "release" {
			err = quarantine.Release(ctx, m.store, id, m.by, m.relay)
		} else {
			err = quarantine.Delete(ctx, m.store, id, m.by)
		}
		meta, gerr := m.store.Get(ctx, id)
		if gerr != nil && err == nil {
			err = gerr
		}
		return reviewDoneMsg{id: id, action: action, meta: meta, err: err}
	}
}

func (m *reviewModel) loadBody(id string) tea.Cmd {
	return func() tea.Msg {
		ctx, cancel := context.WithTimeout(m.ctx, qReadTimeout)
		defer cancel()
		rc, err := m.store.Open(ctx, id)
		if err != nil {
			return reviewBodyMsg{id: id, err: err}
		}
		defer rc.Close()
		b, err := io.ReadAll(io.LimitReader(rc, qMaxViewBytes+1))
		if err != nil {
			return reviewBodyMsg{id: id, err: err}
		}
		truncated := len(b) > qMaxViewBytes
		if truncated {
			b = b[:qMaxViewBytes]
		}
		lines := strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n")
		for i, l := range lines {
			lines[i] = qEscape(l, false)
		}
		if truncated {
			lines = append(lines, fmt.Sprintf("... (only the first %d bytes are shown)", qMaxViewBytes))
		}
		return reviewBodyMsg{id: id, lines: lines}
	}
}

func (m *reviewModel) View() string {
	var b strings.Builder
	it := m.cur()
	fmt.Fprintf(&b, "mxguard quarantine review: item %d of %d   released %d, deleted %d, skipped %d\n\n",
		m.i+1, len(m.items), m.released, m.deleted, m.skipped)
	switch m.mode {
	case modeMessage:
		page := max(m.height-4, 1)
		end := min(m.scroll+page, len(m.body))
		for _, l := range m.body[min(m.scroll, end):end] {
			b.WriteString(l)
			b.WriteByte('\n')
		}
		fmt.Fprintf(&b, "\n[j/k] line  [space/b] page  [v] back to summary  [r] release  [d] delete  [s] skip  [q] quit   lines %d-%d of %d\n",
			m.scroll+1, end, len(m.body))
	default:
		qWriteSummary(&b, *it)
		switch {
		case m.mode == modeConfirm && m.pending == "release":
			fmt.Fprintf(&b, "\nRelease %s to %d recipient(s)? [y/N]\n", it.ID, len(it.Rcpts))
		case m.mode == modeConfirm:
			fmt.Fprintf(&b, "\nDelete %s? [y/N]\n", it.ID)
		default:
			b.WriteString("\n[r] release  [d] delete  [v] view message  [s] skip  [p] previous  [q] quit\n")
		}
	}
	if m.status != "" {
		b.WriteString(m.status)
		b.WriteByte('\n')
	}
	return b.String()
}
