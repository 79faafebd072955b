package filter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxguard/mxguard/auth"
	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
	"github.com/mxguard/mxguard/relay"
)

// copyBufs are the buffers that carry DATA from go-smtp's reader into the
// validator: io.Copy would allocate (and zero) 32 KiB per message, a third
// of all the bytes the relay path allocated (load-benchmark heap profile).
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// spooledMessage is one received message: the spool plus what was parsed from it.
type spooledMessage struct {
	sp        *spool
	fields    []headerField
	headerEnd int64 // end of the last header field
	strip     []bool
}

// Data reads the message through the validator into the spool, gathers the
// data-stage facts, asks the policy and acts. It runs for DATA and for BDAT
// (go-smtp hands both to us as a stream).
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// Cleared by Reset, once go-smtp has written our reply.
	s.busy.Store(true)
	t := s.t
	if t == nil || len(t.Envelope.RcptTo) == 0 || s.down == nil {
		return s.fail(ReplyInternalError)
	}
	o := s.opts()

	sp := newSpool(o.SpoolMemory, o.SpoolDir, o.MemoryBudget)
	defer sp.Close()
	v := newLineValidator(sp, o.Normalize, o.MaxLineLength-2)
	defer v.release()
	dr := &deadlineReader{r: r, conn: s.nc, start: time.Now(), idle: o.CommandTimeout, total: o.DataTimeout, minRate: o.MinDataRate}
	bp := copyBufs.Get().(*[]byte)
	_, err := io.CopyBuffer(v, dr, *bp)
	copyBufs.Put(bp)
	if err == nil {
		err = v.Close()
	}
	if err != nil {
		return s.dataReadError(err, dr)
	}
	if v.LongLine {
		return s.finish(ReplyLineTooLong, outcome{Result: "rejected", Why: "line_too_long"})
	}
	if v.Dirty() && !o.Normalize {
		s.srv.m.bareLineEndings.Inc()
		return s.finish(ReplyBareLineEnding, outcome{Result: "rejected", Why: "bare_line_ending"})
	}

	t.Stage = StageData
	msg, rep := s.parseMessage(sp)
	if rep != nil {
		return s.finish(*rep, outcome{Result: "rejected", Why: "header"})
	}
	t.Message.LineEndings = LineEndings{BareLF: v.BareLF, BareCR: v.BareCR, NUL: v.NUL, Normalized: v.Dirty()}
	if t.Message.ReceivedCount >= o.MaxReceived && o.MaxReceived > 0 {
		return s.finish(ReplyMailLoop, outcome{Result: "rejected", Why: "mail_loop"})
	}

	ctx, cancel := s.ctx()
	defer cancel()
	s.checkMessage(ctx, t, sp)
	if o.Limiter != nil {
		o.Limiter.count(ctx, StageData, t, sp.Size())
	}
	d, reply := s.srv.decide(ctx, t)
	if s.held != nil && moreSevere(s.held.Action, d.Action) {
		// Early quarantine/tag verdicts apply now; most severe wins.
		d.Action = s.held.Action
		d.Reasons = append(append([]policy.Reason{}, s.held.Reasons...), d.Reasons...)
	}
	s.srv.m.decisions.WithLabelValues(d.Action).Inc()
	switch d.Action {
	case ActionReject, ActionTempfail:
		return s.finishDecision(d, *reply, outcome{Result: d.Action})
	case ActionQuarantine:
		return s.quarantine(ctx, d, msg)
	default:
		return s.relay(d, msg)
	}
}

// dataReadError maps a failure while reading DATA. go-smtp keeps reading to
// the end of the message after we return, so the session stays in step.
func (s *session) dataReadError(err error, dr *deadlineReader) error {
	switch {
	case errors.Is(err, smtp.ErrDataTooLarge):
		return s.finish(ReplyTooLarge, outcome{Result: "rejected", Why: "too_large"})
	case errors.Is(err, smtp.ErrTooLongLine):
		return s.finish(ReplyLineTooLong, outcome{Result: "rejected", Why: "line_too_long"})
	case dr.timedOut:
		// The rest of the message may still arrive and would be read as
		// commands: close the connection once the reply is out.
		s.closeAfter = true
		return s.finish(ReplyDataTimeout, outcome{Result: "tempfailed", Why: "data_timeout"})
	case errors.Is(err, smtp.ErrDataReset):
		s.srv.logTransaction(s.t, s.txStart, outcome{Result: "abandoned", Why: "bdat_reset"})
		s.t.markDone()
		return err
	}
	s.srv.log.Info("data read failed", "id", s.id(), "err", err)
	return s.finish(ReplyInternalError, outcome{Result: "tempfailed", Why: "read_error"})
}

// parseMessage reads the header section and fills the message facts that
// come from headers.
func (s *session) parseMessage(sp *spool) (*spooledMessage, *Reply) {
	o := s.opts()
	head, err := sp.Head(o.MaxHeaderBytes)
	if err != nil {
		return nil, &ReplyInternalError
	}
	fields, _, err := parseHeader(head, sp.Size() <= int64(o.MaxHeaderBytes))
	if err != nil {
		return nil, &ReplyHeaderTooLarge
	}
	m := &spooledMessage{sp: sp, fields: fields, strip: make([]bool, len(fields))}
	for _, f := range fields {
		m.headerEnd += int64(len(f.Raw))
	}
	t := s.t
	msg := &Message{Size: sp.Size(), Headers: make([]string, 0, len(fields)), To: []string{}, Attachments: []Attachment{}}
	t.Message = msg
	for i, f := range fields {
		msg.Headers = append(msg.Headers, truncate(f.Name, 128))
		switch f.Name {
		case "received":
			msg.ReceivedCount++
		case "authentication-results":
			// RFC 8601 5: remove fields that claim our authserv-id; only we
			// may speak for it.
			m.strip[i] = auth.AuthResClaims(f.Value(), o.Hostname)
		}
		if strings.HasPrefix(f.Name, strings.ToLower(o.Headers.Prefix)) {
			// A sender must not be able to forge our verdict headers.
			m.strip[i] = true
		}
	}
	fromVals := headerValues(fields, "from")
	addr, dom, ferr := auth.ParseHeaderFrom(fromVals)
	switch {
	case ferr == nil:
		msg.HeaderFrom, msg.HeaderFromDomain = addr, dom
	case errors.Is(ferr, auth.ErrNoFrom):
		msg.FromProblem = "missing"
	case errors.Is(ferr, auth.ErrMultipleFrom):
		msg.FromProblem = "multiple"
	case errors.Is(ferr, auth.ErrMultipleMailboxes):
		msg.FromProblem = "multiple_mailboxes"
	default:
		msg.FromProblem = "invalid"
	}
	for _, v := range headerValues(fields, "to") {
		if len(msg.To) < 100 {
			msg.To = append(msg.To, decodeHeaderText(v, 998))
		}
	}
	msg.Subject = decodeHeaderText(firstValue(fields, "subject"), 998)
	msg.MessageID = truncate(firstValue(fields, "message-id"), 998)
	msg.Date = truncate(firstValue(fields, "date"), 200)
	return m, nil
}

// checkMessage runs DKIM, DMARC and the MIME walk.
func (s *session) checkMessage(ctx context.Context, t *Transaction, sp *spool) {
	o := s.opts()
	t.Message.Attachments, t.Message.URLs, t.Message.MIMEProblem = MessageFacts(sp.Section(0), o.Checks.MIME)
	if t.Message.Attachments == nil {
		t.Message.Attachments = []Attachment{}
	}
	if o.Resolver == nil {
		return
	}
	if o.Checks.DKIM {
		res, err := auth.VerifyDKIM(ctx, o.Resolver, sp.Section(0), auth.DKIMOptions{MaxSignatures: o.Checks.MaxDKIMSignatures, Timeout: s.srv.stageTimeout()})
		if err == nil && res != nil {
			t.Auth.DKIM = res
		}
	}
	if o.Checks.DMARC && t.Message.FromProblem != "" {
		// RFC 9989: DMARC needs exactly one From with one domain; without it
		// there is no domain to evaluate.
		t.Auth.DMARC = &auth.DMARCResult{Result: "permerror", Reason: "From header: " + t.Message.FromProblem}
	}
	if o.Checks.DMARC && t.Message.HeaderFromDomain != "" {
		spfRes, spfDom := "none", ""
		if t.Auth.SPF != nil && t.Auth.SPF.Identity == "mailfrom" {
			spfRes, spfDom = t.Auth.SPF.Result, t.Auth.SPF.Domain
		}
		dm := auth.EvaluateDMARC(ctx, o.Resolver, t.Message.HeaderFromDomain, spfRes, spfDom, t.Auth.DKIM)
		t.Auth.DMARC = &dm
	}
}

// headerBlock builds what we prepend: Received, Authentication-Results and
// the X-MXGuard-* verdict headers.
func (s *session) headerBlock(d policy.Decision, extra ...[]byte) []byte {
	o := s.opts()
	t := s.t
	var b bytes.Buffer
	b.Write(receivedHeader(t, o.Hostname, o.Now()))
	if o.Resolver != nil {
		b.Write(foldAuthRes(AuthResults(o.Hostname, t)))
	}
	h := o.Headers
	if d.Action == "" {
		// No policy ran (none configured): say so rather than nothing.
		d.Action = ActionAccept
	}
	for _, vh := range d.VerdictHeaders(h.Prefix, h.Verdict, h.Reasons, h.DecisionID) {
		b.Write(foldHeader(vh.Name, vh.Value))
	}
	for _, ah := range d.AddHeaders {
		// The engine validated names (our prefix) and values (no CR/LF).
		b.Write(foldHeader(ah.Name, ah.Value))
	}
	for _, e := range extra {
		b.Write(e)
	}
	return b.Bytes()
}

// foldAuthRes turns FormatAuthResults' value (which may already carry
// folding) into a complete field.
func foldAuthRes(v string) []byte {
	v = strings.ReplaceAll(v, "\r\n", "\n")
	v = strings.ReplaceAll(v, "\n", "\r\n")
	return []byte("Authentication-Results: " + strings.TrimLeft(v, " ") + "\r\n")
}

// reader streams the message as it goes downstream or into quarantine: our
// header block, the original header minus stripped fields, the rest as
// received. Nothing is copied: the pieces are views of the spool.
func (m *spooledMessage) reader(prefix []byte) io.Reader {
	parts := make([]io.Reader, 0, 4)
	parts = append(parts, bytes.NewReader(prefix))
	var off int64
	runStart := int64(0)
	for i, f := range m.fields {
		if m.strip[i] {
			if off > runStart {
				parts = append(parts, io.NewSectionReader(m.sp.ReaderAt(), runStart, off-runStart))
			}
			runStart = off + int64(len(f.Raw))
		}
		off += int64(len(f.Raw))
	}
	parts = append(parts, io.NewSectionReader(m.sp.ReaderAt(), runStart, m.sp.Size()-runStart))
	// Hide MultiReader's WriteTo: it allocates a 32 KiB buffer per call,
	// while the relay and the stores copy with pooled buffers.
	return struct{ io.Reader }{io.MultiReader(parts...)}
}

// relay streams the accepted message downstream and answers the sender with
// the downstream's verdict: never a 250 the downstream did not give.
func (s *session) relay(d policy.Decision, m *spooledMessage) error {
	start := s.opts().Now()
	err := s.down.Data(m.reader(s.headerBlock(d)))
	s.srv.m.relayDuration.Observe(s.opts().Now().Sub(start).Seconds())
	var re *relay.ReplyError
	if err == nil || errors.As(err, &re) {
		// RFC 5321 4.1.1.4: the reply to the final dot ends the downstream
		// transaction; the next MAIL needs no RSET (which would also cost
		// a second EHLO with go-smtp's client).
		s.downInTx = false
	}
	if err != nil {
		r := s.downstreamFailure("data", err)
		if r.Code/100 == 4 {
			return s.finishDecision(d, r, outcome{Result: "tempfailed", Why: "downstream", Downstream: errText(err)})
		}
		return s.finishDecision(d, r, outcome{Result: "rejected", Why: "downstream", Downstream: errText(err)})
	}
	return s.finishDecision(d, ReplyDelivered, outcome{Result: "delivered"})
}

// quarantine stores the message (fsync before return) and answers 250; the
// downstream transaction is reset.
func (s *session) quarantine(ctx context.Context, d policy.Decision, m *spooledMessage) error {
	o := s.opts()
	if o.Quarantine == nil {
		s.srv.log.Error("quarantine decided but no quarantine store configured", "id", s.id())
		return s.finishDecision(d, ReplyInternalError, outcome{Result: "tempfailed", Why: "no_quarantine_store"})
	}
	t := s.t
	meta := quarantineMeta(t, d, o.Now())
	id, err := o.Quarantine.Put(ctx, meta, m.reader(s.headerBlock(d)))
	if err != nil {
		s.srv.log.Error("quarantine store failed", "id", t.ID, "err", err)
		return s.finishDecision(d, ReplyInternalError, outcome{Result: "tempfailed", Why: "quarantine_store"})
	}
	return s.finishDecision(d, ReplyQuarantined, outcome{Result: "quarantined", Quarantine: id})
}

func quarantineMeta(t *Transaction, d policy.Decision, now time.Time) quarantine.Meta {
	m := quarantine.Meta{
		Received: now,
		TxID:     t.ID,
		ClientIP: t.Client.IP,
		Helo:     t.Client.Helo,
		PTR:      t.Client.PTR,
		MailFrom: t.Envelope.MailFrom,
		Rcpts:    append([]string(nil), t.Envelope.RcptTo...),
	}
	if t.Client.TLS != nil {
		m.TLS = t.Client.TLS.Version
	}
	if len(t.Envelope.RcptTo) > 0 {
		m.Route = domainOf(t.Envelope.RcptTo[0])
	}
	if t.Message != nil {
		m.HeaderFrom, m.Subject, m.MessageID, m.Size = t.Message.HeaderFrom, t.Message.Subject, t.Message.MessageID, t.Message.Size
	}
	m.Decision = quarantine.Decision{Action: d.Action, PolicyRevision: d.Revision, DecisionID: d.ID, DryRun: !d.Enforced}
	for _, r := range d.Reasons {
		m.Decision.Reasons = append(m.Decision.Reasons, quarantine.Reason{Code: r.Code, Msg: r.Msg, Title: r.Title, Description: r.Description})
	}
	m.Auth = mustJSON(t.Auth)
	return m
}

// finish ends the transaction with a reply that no policy decided.
func (s *session) finish(r Reply, o outcome) error {
	return s.finishDecision(policy.Decision{}, r, o)
}

// finishDecision logs the transaction and its decision and returns the reply
// (a 250 is returned as an SMTPError too: go-smtp writes it verbatim, and it
// is the only way to give the final reply our transaction id).
func (s *session) finishDecision(d policy.Decision, r Reply, o outcome) error {
	t := s.t
	o.Code = r.Code
	s.srv.logDecision(t, d, r)
	if d.Action != "" {
		o.Action = d.Action
		o.Reasons = reasonCodes(d.Reasons)
		o.DryRun = reasonCodes(d.DryRun)
	}
	s.srv.logTransaction(t, s.txStart, o)
	t.markDone()
	if r.Code/100 != 2 {
		s.errors++
	}
	return r.SMTPError(t.ID)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return truncate(err.Error(), 300)
}
