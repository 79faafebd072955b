package filter

import (
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"github.com/mxguard/mxguard/policy"
)

// maxLogValue bounds any client-controlled value in a log line.
const maxLogValue = 256

// outcome is how a transaction ended, for its summary log line.
type outcome struct {
	Result     string // delivered, quarantined, rejected, tempfailed, abandoned
	Why        string
	Code       int
	Action     string
	Reasons    string
	DryRun     string
	Downstream string
	Quarantine string
}

// logTransaction writes the one summary line of a transaction.
func (s *Server) logTransaction(t *Transaction, start time.Time, o outcome) {
	if t == nil {
		return
	}
	s.m.transactions.WithLabelValues(o.Result).Inc()
	attrs := []any{
		"id", t.ID,
		"client_ip", t.Client.IP,
		"helo", clean(t.Client.Helo),
		"ptr", clean(t.Client.PTR),
		"tls", t.Client.TLS != nil,
		"mail_from", clean(t.Envelope.MailFrom),
		"rcpts", cleanList(t.Envelope.RcptTo),
		"outcome", o.Result,
	}
	if t.Client.TLS != nil {
		attrs = append(attrs, "tls_version", t.Client.TLS.Version)
	}
	if o.Code != 0 {
		attrs = append(attrs, "code", o.Code)
	}
	if len(t.refused) > 0 {
		attrs = append(attrs, "refused_rcpts", cleanList(t.refused))
	}
	if o.Why != "" {
		attrs = append(attrs, "why", o.Why)
	}
	if o.Action != "" {
		attrs = append(attrs, "action", o.Action, "reasons", o.Reasons)
	}
	if o.DryRun != "" {
		attrs = append(attrs, "dry_run", o.DryRun)
	}
	if t.Message != nil {
		attrs = append(attrs, "size", t.Message.Size, "header_from", clean(t.Message.HeaderFrom))
	}
	if t.Auth.SPF != nil {
		attrs = append(attrs, "spf", t.Auth.SPF.Result)
	}
	if len(t.Auth.DKIM) > 0 {
		res := make([]string, 0, len(t.Auth.DKIM))
		for _, d := range t.Auth.DKIM {
			res = append(res, d.Result+":"+clean(d.Domain))
		}
		attrs = append(attrs, "dkim", res)
	}
	if t.Auth.DMARC != nil {
		attrs = append(attrs, "dmarc", t.Auth.DMARC.Result, "dmarc_policy", t.Auth.DMARC.Policy)
	}
	if o.Downstream != "" {
		attrs = append(attrs, "downstream", clean(o.Downstream))
	}
	if o.Quarantine != "" {
		attrs = append(attrs, "quarantine_id", o.Quarantine)
	}
	if !start.IsZero() {
		attrs = append(attrs, "duration_ms", time.Since(start).Milliseconds())
	}
	s.log.Info("transaction", attrs...)
}

// logBlock records an early reject/tempfail (connect, helo, mail, rcpt).
func (s *Server) logBlock(t *Transaction, d policy.Decision, r Reply) {
	s.m.blocks.WithLabelValues(t.Stage, d.Action).Inc()
	s.log.Info("blocked", "id", t.ID, "stage", t.Stage, "client_ip", t.Client.IP,
		"helo", clean(t.Client.Helo), "mail_from", clean(t.Envelope.MailFrom), "rcpt", clean(t.Envelope.Rcpt),
		"action", d.Action, "reasons", reasonCodes(d.Reasons), "code", r.Code)
	s.logDecision(t, d, r)
}

// clean escapes control characters and bounds the length of a value that
// came from the network, so a log line cannot be forged or flooded.
func clean(v string) string {
	if len(v) > maxLogValue {
		v = truncate(v, maxLogValue) + "…"
	}
	if strings.IndexFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f || r == 0xfffd }) < 0 {
		return v
	}
	q, _ := json.Marshal(v)
	return strings.Trim(string(q), `"`)
}

func cleanList(vs []string) []string {
	out := make([]string, 0, len(vs))
	for i, v := range vs {
		if i == 20 {
			out = append(out, "…")
			break
		}
		out = append(out, clean(v))
	}
	return out
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}

var _ = slog.LevelInfo
