package policy

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Actions, from the least to the most severe.
const (
	ActionAccept     = "accept"
	ActionTag        = "tag"
	ActionQuarantine = "quarantine"
	ActionTempfail   = "tempfail"
	ActionReject     = "reject"
)

// actionSets are the Rego sets a policy adds reasons to, most severe first.
var actionSets = []string{ActionReject, ActionTempfail, ActionQuarantine, ActionTag}

// Severity orders actions: reject > tempfail > quarantine > tag > accept.
// An unknown action has severity -1.
func Severity(action string) int {
	switch action {
	case ActionAccept:
		return 0
	case ActionTag:
		return 1
	case ActionQuarantine:
		return 2
	case ActionTempfail:
		return 3
	case ActionReject:
		return 4
	}
	return -1
}

// Reply is an SMTP reply: code (RFC 5321 4.2), enhanced status code
// (RFC 3463) and text. The gateway's reply funnel appends "(id mxg-…)".
type Reply struct {
	Code     int    `json:"code"`
	Enhanced string `json:"enhanced"`
	Text     string `json:"text"`
}

// Reason is why a rule fired. Title and Description come from the METADATA
// of the rule that declares the code (custom.code); Action is the set the
// reason was added to.
type Reason struct {
	Code        string `json:"code"`
	Action      string `json:"action"`
	Msg         string `json:"msg,omitempty"`
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
	Reply       *Reply `json:"reply,omitempty"`
}

// Header is a header field the policy asks to add to relayed mail.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Decision is the policy's verdict for one stage of one transaction.
//
// Action is what the gateway enforces. With Enforced false (policy.enforce:
// false) every reason is in DryRun and Action is accept; WouldAction is the
// action the policy would have taken with every reason enforced (set only
// when it differs from Action), so the log can say "would reject".
type Decision struct {
	ID          string        `json:"decision_id"`
	TxnID       string        `json:"txn_id,omitempty"`
	Stage       string        `json:"stage"`
	Action      string        `json:"action"`
	WouldAction string        `json:"would_action,omitempty"`
	Reasons     []Reason      `json:"reasons"`
	DryRun      []Reason      `json:"dry_run"`
	Reply       *Reply        `json:"reply,omitempty"`
	AddHeaders  []Header      `json:"add_headers,omitempty"`
	Revision    string        `json:"revision"`
	Enforced    bool          `json:"enforced"`
	Duration    time.Duration `json:"duration_ns"`
	// Input is the JSON of the evaluated input, kept for the decision log so
	// that it is encoded once. Nil when the input was given as an ast.Value
	// or as a Go record converted directly (the caller logs its record).
	Input []byte `json:"-"`
}

// Codes lists the enforced reason codes, in order.
func (d *Decision) Codes() []string {
	out := make([]string, 0, len(d.Reasons))
	for _, r := range d.Reasons {
		out = append(out, r.Code)
	}
	return out
}

// Default replies. The text names the reason code so a sender's admin can
// report it; the gateway appends the transaction id.
var (
	defaultReject   = Reply{Code: 550, Enhanced: "5.7.1", Text: "message rejected by policy"}
	defaultTempfail = Reply{Code: 451, Enhanced: "4.7.1", Text: "message temporarily refused by policy"}
	// ErrorReply is what the caller sends when Eval fails: 451 4.3.0
	// (RFC 3463 4.3.0: other or undefined mail system status).
	ErrorReply = Reply{Code: 451, Enhanced: "4.3.0", Text: "temporary policy failure, try again later"}
)

// ErrInvalidDecision wraps every validation failure of a policy's output.
var ErrInvalidDecision = errors.New("invalid policy decision")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidDecision, fmt.Sprintf(format, args...))
}

var (
	codeRE     = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)
	enhancedRE = regexp.MustCompile(`^([245])\.[0-9]{1,3}\.[0-9]{1,3}$`)
	// RFC 5322 2.2: field name is printable US-ASCII except colon.
	headerNameRE = regexp.MustCompile(`^[!-9;-~]{1,76}$`)
)

const (
	maxMsgLen      = 512
	maxReplyText   = 400 // RFC 5321 4.5.3.1.5: reply line at most 512 octets
	maxHeaderValue = 998 // RFC 5322 2.1.1 line limit; folded on output
	maxReasons     = 100
	maxHeaders     = 20
)

// checkText refuses CR, LF and other control characters, invalid UTF-8 and
// (for SMTP replies and headers) anything but printable ASCII: text from the
// policy goes into SMTP replies and header fields, where a line break would
// inject a reply line or a header.
func checkText(what, s string, max int, asciiOnly bool) error {
	if len(s) > max {
		return invalid("%s longer than %d bytes", what, max)
	}
	if !utf8.ValidString(s) {
		return invalid("%s is not valid UTF-8", what)
	}
	for _, r := range s {
		if r == '\t' {
			continue
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return invalid("%s contains control character %U", what, r)
		}
		if asciiOnly && r > 0x7e {
			return invalid("%s contains non-ASCII character %U", what, r)
		}
	}
	return nil
}

// CheckReply validates a reply for an action: reject needs 5xx with a 5.x.x
// enhanced code, tempfail 4xx with 4.x.x; other actions take no reply.
func CheckReply(action string, r *Reply) error {
	if r == nil {
		return nil
	}
	var class int
	switch action {
	case ActionReject:
		class = 5
	case ActionTempfail:
		class = 4
	default:
		return invalid("a %s reason cannot carry a reply (only reject and tempfail answer the sender)", action)
	}
	if r.Code < class*100+0 || r.Code > class*100+99 || r.Code/10%10 > 5 {
		return invalid("reply code %d is not a %dxx code for %s", r.Code, class, action)
	}
	m := enhancedRE.FindStringSubmatch(r.Enhanced)
	if m == nil {
		return invalid("enhanced code %q is not class.subject.detail (RFC 3463)", r.Enhanced)
	}
	if int(m[1][0]-'0') != class {
		return invalid("enhanced code %s does not match reply class %dxx", r.Enhanced, class)
	}
	if r.Text == "" {
		return invalid("reply text is empty")
	}
	return checkText("reply text", r.Text, maxReplyText, true)
}

// CheckHeader validates a header the policy adds: its name must start with
// prefix (case-insensitive) and be a valid field name; its value printable
// ASCII without CR/LF (it is folded on output, see Header.Fold).
func CheckHeader(prefix string, h Header) error {
	if !headerNameRE.MatchString(h.Name) {
		return invalid("header name %q is not a valid field name", h.Name)
	}
	if prefix == "" || len(h.Name) <= len(prefix) || !strings.EqualFold(h.Name[:len(prefix)], prefix) {
		return invalid("header %q is outside the %q prefix", h.Name, prefix)
	}
	return checkText("header "+h.Name+" value", h.Value, maxHeaderValue, true)
}

// Fold renders the header as "Name: value\r\n", folded at whitespace so that
// lines stay within 78 characters where possible (RFC 5322 2.2.3). The value
// must have passed CheckHeader: folding only ever inserts CRLF before
// existing whitespace, so it cannot create a new field.
func (h Header) Fold() string {
	var b strings.Builder
	line := len(h.Name) + 2
	b.WriteString(h.Name)
	b.WriteString(":")
	words := strings.Fields(h.Value)
	for i, w := range words {
		if i > 0 && line+1+len(w) > 78 {
			b.WriteString("\r\n")
			line = 0
		}
		b.WriteString(" ")
		b.WriteString(w)
		line += 1 + len(w)
	}
	b.WriteString("\r\n")
	return b.String()
}

// VerdictHeaders builds the configurable X-MXGuard-* headers for relayed
// mail: verdict (action, or "accept (dry-run would reject)"), reasons
// (codes) and decision id. Values come from validated codes only.
func (d *Decision) VerdictHeaders(prefix string, verdict, reasons, id bool) []Header {
	var hs []Header
	if verdict {
		v := d.Action
		if d.WouldAction != "" {
			v += " (dry-run: would " + d.WouldAction + ")"
		}
		hs = append(hs, Header{Name: prefix + "Verdict", Value: v})
	}
	if reasons && (len(d.Reasons) > 0 || len(d.DryRun) > 0) {
		codes := d.Codes()
		for _, r := range d.DryRun {
			codes = append(codes, r.Code+"(dry-run)")
		}
		hs = append(hs, Header{Name: prefix + "Reasons", Value: strings.Join(codes, ", ")})
	}
	if id && d.ID != "" {
		hs = append(hs, Header{Name: prefix + "Decision-ID", Value: d.ID})
	}
	return hs
}

// rawDecision is what the policy produced, before validation.
type rawDecision struct {
	sets    [4][]any // reasons (strings or objects), per actionSets entry
	modes   map[string]any
	headers []any
}

type ruleInfo struct{ title, description string }

// build validates the policy output and computes the decision.
func build(raw rawDecision, enforce bool, headerPrefix string, meta map[string]ruleInfo) (Decision, error) {
	d := Decision{Action: ActionAccept, Enforced: enforce, Reasons: []Reason{}, DryRun: []Reason{}}
	modes := make(map[string]string, len(raw.modes))
	for code, v := range raw.modes {
		s, ok := v.(string)
		if !ok || (s != "dryrun" && s != "enforce") {
			return d, invalid("modes[%q] must be \"dryrun\" or \"enforce\", got %v", code, v)
		}
		modes[code] = s
	}
	would := ActionAccept
	n := 0
	for i, action := range actionSets {
		for _, item := range raw.sets[i] {
			n++
			if n > maxReasons {
				return d, invalid("more than %d reasons", maxReasons)
			}
			r, err := parseReason(action, item)
			if err != nil {
				return d, err
			}
			if m, ok := meta[r.Code]; ok {
				r.Title, r.Description = m.title, m.description
			}
			if Severity(action) > Severity(would) {
				would = action
			}
			if !enforce || modes[r.Code] == "dryrun" {
				d.DryRun = append(d.DryRun, r)
				continue
			}
			if Severity(action) > Severity(d.Action) {
				d.Action = action
			}
			d.Reasons = append(d.Reasons, r)
		}
	}
	sortReasons(d.Reasons)
	sortReasons(d.DryRun)
	if would != d.Action {
		d.WouldAction = would
	}
	if len(raw.headers) > maxHeaders {
		return d, invalid("more than %d add_headers", maxHeaders)
	}
	for _, item := range raw.headers {
		h, err := parseHeader(item)
		if err != nil {
			return d, err
		}
		if err := CheckHeader(headerPrefix, h); err != nil {
			return d, err
		}
		d.AddHeaders = append(d.AddHeaders, h)
	}
	sort.Slice(d.AddHeaders, func(i, j int) bool {
		if d.AddHeaders[i].Name != d.AddHeaders[j].Name {
			return d.AddHeaders[i].Name < d.AddHeaders[j].Name
		}
		return d.AddHeaders[i].Value < d.AddHeaders[j].Value
	})
	d.Reply = replyFor(d.Action, d.Reasons)
	return d, nil
}

// replyFor picks the reply of the first reason of the winning action that
// carries one, else the default for the action naming the reason codes.
func replyFor(action string, reasons []Reason) *Reply {
	var def Reply
	switch action {
	case ActionReject:
		def = defaultReject
	case ActionTempfail:
		def = defaultTempfail
	default:
		return nil
	}
	var codes []string
	for _, r := range reasons {
		if r.Action != action {
			continue
		}
		if r.Reply != nil {
			rep := *r.Reply
			return &rep
		}
		if !containsStr(codes, r.Code) {
			codes = append(codes, r.Code)
		}
	}
	text := def.Text + ": " + strings.Join(codes, ", ")
	if len(text) > maxReplyText {
		text = text[:maxReplyText]
	}
	def.Text = text
	return &def
}

func containsStr(xs []string, s string) bool {
	for _, x := range xs {
		if x == s {
			return true
		}
	}
	return false
}

func sortReasons(rs []Reason) {
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if sa, sb := Severity(a.Action), Severity(b.Action); sa != sb {
			return sa > sb
		}
		if a.Code != b.Code {
			return a.Code < b.Code
		}
		return a.Msg < b.Msg
	})
}

func parseReason(action string, item any) (Reason, error) {
	r := Reason{Action: action}
	switch v := item.(type) {
	case string:
		r.Code = v
	case map[string]any:
		for k := range v {
			if k != "code" && k != "msg" && k != "reply" {
				return r, invalid("%s reason has unknown field %q (want code, msg, reply)", action, k)
			}
		}
		code, ok := v["code"].(string)
		if !ok {
			return r, invalid("%s reason without a string code: %v", action, item)
		}
		r.Code = code
		if m, ok := v["msg"]; ok {
			s, ok := m.(string)
			if !ok {
				return r, invalid("%s reason %s: msg is not a string", action, code)
			}
			r.Msg = s
		}
		if rep, ok := v["reply"]; ok {
			p, err := parseReply(rep)
			if err != nil {
				return r, fmt.Errorf("%s reason %s: %w", action, code, err)
			}
			r.Reply = p
		}
	default:
		return r, invalid("%s reason must be a code string or an object {code, msg, reply}, got %T", action, item)
	}
	if !codeRE.MatchString(r.Code) {
		return r, invalid("reason code %q is not snake_case (a-z, 0-9, _; at most 64)", r.Code)
	}
	if err := checkText("reason "+r.Code+" msg", r.Msg, maxMsgLen, false); err != nil {
		return r, err
	}
	if err := CheckReply(action, r.Reply); err != nil {
		return r, fmt.Errorf("reason %s: %w", r.Code, err)
	}
	return r, nil
}

func parseReply(v any) (*Reply, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, invalid("reply must be an object {code, enhanced, text}")
	}
	var r Reply
	for k, x := range m {
		switch k {
		case "code":
			n, ok := toInt(x)
			if !ok {
				return nil, invalid("reply code %v is not an integer", x)
			}
			r.Code = n
		case "enhanced":
			s, ok := x.(string)
			if !ok {
				return nil, invalid("reply enhanced code is not a string")
			}
			r.Enhanced = s
		case "text":
			s, ok := x.(string)
			if !ok {
				return nil, invalid("reply text is not a string")
			}
			r.Text = s
		default:
			return nil, invalid("reply has unknown field %q", k)
		}
	}
	return &r, nil
}

func parseHeader(v any) (Header, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Header{}, invalid("add_headers entry must be an object {name, value}")
	}
	name, ok1 := m["name"].(string)
	value, ok2 := m["value"].(string)
	if !ok1 || !ok2 || len(m) != 2 {
		return Header{}, invalid("add_headers entry must be {name: string, value: string}, got %v", v)
	}
	return Header{Name: name, Value: value}, nil
}
