package filter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/mxguard/mxguard/auth"
)

// InspectInput is the SMTP side of a message checked without SMTP.
type InspectInput struct {
	IP       netip.Addr
	Helo     string
	MailFrom string
	Rcpts    []string
}

// Inspect runs the checks the gateway runs on a message — FCrDNS, SPF, the
// DATA validator, header facts, MIME facts, DKIM, DMARC — and returns the
// data-stage transaction record the policy would see. It is what `mxguard
// policy eval --message` uses, so a dry run sees exactly the gateway's facts.
// Rate limits are not counted and no policy runs.
func Inspect(ctx context.Context, opts Options, in InspectInput, msg io.Reader) (*Transaction, error) {
	opts.setDefaults()
	if opts.MaxLineLength <= 0 {
		opts.MaxLineLength = 2000
	}
	srv := &Server{opts: opts, log: opts.Logger, m: opts.Metrics}
	s := &session{srv: srv, gc: &gateConn{id: newID(), peer: in.IP}, base: ctx}
	s.client = Client{IP: in.IP.String(), Helo: in.Helo, PTRResult: "none"}
	if !validHelo(in.Helo) {
		return nil, fmt.Errorf("inspect: bad HELO name %q", in.Helo)
	}
	if opts.Checks.FCrDNS && opts.Resolver != nil {
		s.client.PTR, s.client.PTRResult = fcrdns(ctx, opts.Resolver, in.IP)
	}
	t := s.newTransaction()
	s.t = t
	if in.MailFrom != "" {
		if r := checkAddress(in.MailFrom, true, false); r != nil || hasControl(in.MailFrom) {
			return nil, fmt.Errorf("inspect: bad sender address %q", in.MailFrom)
		}
	}
	t.Envelope.MailFrom = in.MailFrom
	t.Envelope.MailFromDomain = domainOf(in.MailFrom)
	t.Envelope.SMTPUTF8 = !isASCII(in.MailFrom)
	for _, r := range in.Rcpts {
		if rr := checkAddress(r, true, true); rr != nil || hasControl(r) {
			return nil, fmt.Errorf("inspect: bad recipient address %q", r)
		}
		addr, _ := normalizeRcpt(r)
		t.Envelope.RcptTo = append(t.Envelope.RcptTo, addr)
		if !isASCII(r) {
			t.Envelope.SMTPUTF8 = true
		}
	}
	if opts.Checks.SPF && opts.Resolver != nil {
		res := auth.CheckSPF(ctx, opts.Resolver, in.IP, in.Helo, in.MailFrom, auth.SPFOptions{
			Timeout: srv.stageTimeout(), ReceiverName: opts.Hostname})
		t.Auth.SPF = &res
	}

	sp := newSpool(opts.SpoolMemory, opts.SpoolDir, nil)
	defer sp.Close()
	// Files on disk often have bare LF line endings: normalise them as the
	// gateway's normalize mode would, and record what was seen.
	v := newLineValidator(sp, true, opts.MaxLineLength-2)
	defer v.release()
	r := io.Reader(msg)
	if opts.MaxMessageBytes > 0 {
		r = io.LimitReader(msg, opts.MaxMessageBytes+1)
	}
	if _, err := io.Copy(v, r); err != nil {
		return nil, fmt.Errorf("inspect: read message: %w", err)
	}
	if err := v.Close(); err != nil {
		return nil, fmt.Errorf("inspect: %w", err)
	}
	if opts.MaxMessageBytes > 0 && sp.Size() > opts.MaxMessageBytes {
		return nil, errors.New("inspect: message larger than limits.max_message_bytes")
	}
	t.Stage = StageData
	if _, rep := s.parseMessage(sp); rep != nil {
		return nil, fmt.Errorf("inspect: %s", strings.ToLower(rep.Text))
	}
	t.Message.LineEndings = LineEndings{BareLF: v.BareLF, BareCR: v.BareCR, NUL: v.NUL, Normalized: v.Dirty()}
	s.checkMessage(ctx, t, sp)
	return t, nil
}

// AuthResults formats the Authentication-Results field value the gateway
// would add for t.
func AuthResults(hostname string, t *Transaction) string {
	spf := auth.AuthResSPF{MailFrom: t.Envelope.MailFrom, Helo: t.Client.Helo}
	if t.Auth.SPF != nil {
		spf.Result = t.Auth.SPF.Result
	}
	dm := auth.DMARCResult{}
	if t.Auth.DMARC != nil {
		dm = *t.Auth.DMARC
	}
	return auth.FormatAuthResults(hostname, spf, t.Auth.DKIM, dm)
}
