package filter

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mxguard/mxguard/policy"
	"github.com/mxguard/mxguard/quarantine"
)

// Actions of a decision, in rising severity.
const (
	ActionAccept     = "accept"
	ActionTag        = "tag"
	ActionQuarantine = "quarantine"
	ActionTempfail   = "tempfail"
	ActionReject     = "reject"
)

var severity = map[string]int{ActionAccept: 0, ActionTag: 1, ActionQuarantine: 2, ActionTempfail: 3, ActionReject: 4}

// Decider is the policy engine as the filter uses it (*policy.Engine).
type Decider interface {
	Eval(ctx context.Context, input any) (policy.Decision, error)
}

// Quarantiner stores held messages (quarantine.Store).
type Quarantiner interface {
	Put(ctx context.Context, m quarantine.Meta, msg io.Reader) (string, error)
}

// decide runs the policy for t's stage. It returns the decision and, for
// reject and tempfail, the reply to send. Any engine failure is a tempfail
// 451 4.3.0 (ARCHITECTURE.md principle 5: never an accept, never a 5xx).
func (s *Server) decide(ctx context.Context, t *Transaction) (policy.Decision, *Reply) {
	if s.opts.Policy == nil {
		return policy.Decision{Action: ActionAccept, Stage: t.Stage}, nil
	}
	d, err := s.opts.Policy.Eval(ctx, t)
	if err != nil {
		s.log.Error("policy evaluation failed", "id", t.ID, "stage", t.Stage, "err", err)
		r := ReplyPolicyError
		d = policy.Decision{Action: ActionTempfail, Stage: t.Stage, Reasons: []policy.Reason{{Code: "policy_error"}}, Enforced: true}
		return d, &r
	}
	switch d.Action {
	case ActionReject, ActionTempfail:
		r := policyReply(d)
		return d, &r
	}
	return d, nil
}

// policyReply turns a reject/tempfail decision into the reply. The engine
// has validated the reply's class and text; the text names the reason code
// so that a sender's admin can report it.
func policyReply(d policy.Decision) Reply {
	r := ReplyPolicyReject
	if d.Action == ActionTempfail {
		r = ReplyPolicyTempfail
	}
	if d.Reply != nil && d.Reply.Code/100 == r.Code/100 {
		r.Code = d.Reply.Code
		if e, ok := parseEnhanced(d.Reply.Enhanced); ok && e[0] == r.Code/100 {
			r.Enhanced = e
		}
		if d.Reply.Text != "" {
			r.Text = d.Reply.Text
		}
	}
	if d.Reply == nil || d.Reply.Text == "" {
		if codes := reasonCodes(d.Reasons); codes != "" {
			r.Text += ": " + codes
		}
	}
	return r
}

func reasonCodes(rs []policy.Reason) string {
	codes := make([]string, 0, len(rs))
	for _, r := range rs {
		codes = append(codes, r.Code)
	}
	return strings.Join(codes, ", ")
}

func parseEnhanced(s string) (smtp.EnhancedCode, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return smtp.EnhancedCode{}, false
	}
	var e smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return smtp.EnhancedCode{}, false
		}
		e[i] = n
	}
	return e, true
}

// logDecision writes the decision log line, with the reply the client got.
func (s *Server) logDecision(t *Transaction, d policy.Decision, r Reply) {
	if s.opts.DecisionLog == nil || d.Action == "" {
		return
	}
	sent := &policy.Reply{Code: r.Code, Enhanced: fmt.Sprintf("%d.%d.%d", r.Enhanced[0], r.Enhanced[1], r.Enhanced[2]), Text: sanitizeReplyText(r.Text)}
	var in any
	if d.Input == nil {
		in = t
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.opts.DecisionLog.Log(ctx, policy.Entry{Decision: d, Input: in, Gateway: t.Gateway, Reply: sent}); err != nil {
		s.log.Error("decision log write failed", "id", t.ID, "err", err)
	}
}

// moreSevere reports whether action a outranks b.
func moreSevere(a, b string) bool { return severity[a] > severity[b] }
