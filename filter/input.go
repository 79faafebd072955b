package filter

import (
	"github.com/mxguard/mxguard/auth"
	"github.com/mxguard/mxguard/ratelimit"
)

// InputVersion is the version of the Transaction JSON schema
// (docs/policy.md, policy/schema/input.json). Bump it on any incompatible change.
const InputVersion = 1

// Stages, in the order a transaction passes through them.
const (
	StageConnect = "connect"
	StageHelo    = "helo"
	StageMail    = "mail"
	StageRcpt    = "rcpt"
	StageData    = "data"
)

// Transaction is the one record of an SMTP transaction: filled stage by stage
// by this package, read by the policy as `input`, written to the decision log
// and kept as quarantine metadata. Each field notes the stage that sets it.
type Transaction struct {
	Version int    `json:"version"`
	Stage   string `json:"stage"`
	// ID is the transaction id shown in every reply ("mxg-…"). connect; a new
	// one after each completed or reset transaction on the same connection.
	ID string `json:"id"`
	// Gateway is our configured hostname (authserv-id). connect.
	Gateway  string    `json:"gateway"`
	Client   Client    `json:"client"`
	Envelope Envelope  `json:"envelope"`
	Message  *Message  `json:"message,omitempty"`
	Auth     AuthFacts `json:"auth"`
	// Ratelimit holds one fact per configured dimension, from the stage where
	// the dimension becomes known (client_ip at connect, mail_from at mail, …).
	Ratelimit map[string]ratelimit.Fact `json:"ratelimit,omitempty"`

	// finished is set once the transaction got its final reply.
	finished bool
	// refused lists refused recipients with their reply code, for the log.
	refused []string
}

// maxLoggedRefusals bounds the refused recipients kept for the log line.
const maxLoggedRefusals = 20

func (t *Transaction) done() bool { return t.finished }
func (t *Transaction) markDone()  { t.finished = true }

// Client describes the connecting host.
type Client struct {
	// IP is the client address (from the PROXY header when one was accepted). connect.
	IP   string `json:"ip"`
	Port int    `json:"port"`
	// Proxied is true when IP came from a PROXY protocol header. connect.
	Proxied bool `json:"proxied"`
	// Helo is the EHLO/HELO argument. helo.
	Helo string `json:"helo"`
	// PTR is the forward-confirmed reverse DNS name (FCrDNS), "" when none. helo.
	PTR string `json:"ptr"`
	// PTRResult: pass (forward-confirmed), fail (no PTR or not confirmed),
	// temperror (DNS trouble), none (check off). helo.
	PTRResult string `json:"ptr_result"`
	// TLS is set once STARTTLS succeeded. helo (after STARTTLS).
	TLS *TLSInfo `json:"tls,omitempty"`
}

// TLSInfo describes the inbound TLS session.
type TLSInfo struct {
	Version string `json:"version"`
	Cipher  string `json:"cipher"`
}

// Envelope is the SMTP envelope.
type Envelope struct {
	// MailFrom is the reverse-path, "" for the null sender <>. mail.
	MailFrom       string `json:"mail_from"`
	MailFromDomain string `json:"mail_from_domain"`
	// DeclaredSize is the SIZE= parameter, 0 when absent. mail.
	DeclaredSize int64 `json:"declared_size"`
	SMTPUTF8     bool  `json:"smtputf8"`
	// Body is the BODY= parameter (7BIT, 8BITMIME), "" when absent. mail.
	Body string `json:"body,omitempty"`
	// RcptTo lists the recipients accepted so far (at rcpt: before the one
	// being decided; at data: all of them). rcpt, data.
	RcptTo []string `json:"rcpt_to"`
	// Rcpt is the recipient being decided at the rcpt stage. rcpt only.
	Rcpt       string `json:"rcpt,omitempty"`
	RcptDomain string `json:"rcpt_domain,omitempty"`
}

// Message holds facts about the content. data.
type Message struct {
	Size int64 `json:"size"`
	// HeaderFrom is the one RFC5322.From mailbox; FromProblem names what is
	// wrong when there is not exactly one From with one mailbox:
	// "" (fine), "missing", "multiple", "multiple_mailboxes", "invalid".
	HeaderFrom       string   `json:"header_from"`
	HeaderFromDomain string   `json:"header_from_domain"`
	FromProblem      string   `json:"from_problem,omitempty"`
	To               []string `json:"to"`
	Subject          string   `json:"subject"`
	MessageID        string   `json:"message_id"`
	Date             string   `json:"date"`
	// Headers lists the header field names present, lower-cased, in order,
	// with repeats.
	Headers       []string `json:"headers"`
	ReceivedCount int      `json:"received_count"`
	// LineEndings reports bare CR, bare LF and NUL seen in DATA (only
	// possible when data.line_endings is normalize: otherwise the message is
	// refused before the policy runs).
	LineEndings LineEndings  `json:"line_endings"`
	Attachments []Attachment `json:"attachments"`
	URLs        URLFacts     `json:"urls"`
	// MIMEProblem is set when the MIME structure was malformed or past a limit.
	MIMEProblem string `json:"mime_problem,omitempty"`
}

// LineEndings are facts from the DATA validator.
type LineEndings struct {
	BareLF     bool `json:"bare_lf"`
	BareCR     bool `json:"bare_cr"`
	NUL        bool `json:"nul"`
	Normalized bool `json:"normalized"`
}

// Attachment is one MIME part with a filename or a non-text content type.
type Attachment struct {
	Filename string `json:"filename"`
	// ContentType is the declared type, lower-cased, without parameters.
	ContentType string `json:"content_type"`
	// SniffedType is what the content looks like (net/http.DetectContentType
	// plus a few magic numbers for executables and archives).
	SniffedType string `json:"sniffed_type"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
}

// URLFacts counts links found in the text parts.
type URLFacts struct {
	Count   int      `json:"count"`
	Domains []string `json:"domains"`
}

// AuthFacts are the sender-authentication results.
type AuthFacts struct {
	// SPF for the MAIL FROM identity (HELO identity for the null sender). mail.
	SPF *auth.SPFResult `json:"spf,omitempty"`
	// DKIM has one result per signature verified. data.
	DKIM []auth.DKIMResult `json:"dkim"`
	// DMARC for the RFC5322.From domain. data.
	DMARC *auth.DMARCResult `json:"dmarc,omitempty"`
}
