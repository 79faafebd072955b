// Package quarantine keeps messages the policy held until a reviewer releases
// or deletes them.
//
// Two backends implement Admin: Dir (files under one directory, written
// atomically and fsynced, the default) and Redis (shared by every gateway of a
// fleet). Release delivers a held item exactly once through a Deliverer (the
// relay); Sweep purges items older than the retention period.
//
// The message stored is exactly what the gateway would have relayed: with the
// Received and Authentication-Results headers the gateway prepended. Release
// adds only an X-MXGuard-Released header in front of it.
package quarantine

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// MetaVersion is the version of the Meta JSON schema written by this package.
const MetaVersion = 1

// Item status values. An item is held until a reviewer acts; "releasing" is
// the claim taken by one Release while it delivers, so a second Release (in
// this or another process) sees the item is not held and does nothing.
const (
	StatusHeld      = "held"
	StatusReleasing = "releasing"
	StatusReleased  = "released"
	StatusDeleted   = "deleted"
	// StatusDamaged marks, in List results only, an item whose metadata
	// cannot be read. It is never stored.
	StatusDamaged = "damaged"
)

// Errors callers test with errors.Is.
var (
	// ErrNotFound: no item with that id (or its message body is gone).
	ErrNotFound = errors.New("quarantine: no such item")
	// ErrBadID: the id is not one this package generates; it was never used
	// as a path or key.
	ErrBadID = errors.New("quarantine: malformed id")
	// ErrDamaged: the item's metadata cannot be decoded.
	ErrDamaged = errors.New("quarantine: damaged metadata")
	// ErrTooLarge: the message is bigger than the store's size cap.
	ErrTooLarge = errors.New("quarantine: message too large")
	// ErrNotHeld: a release or delete found the item in another status
	// (already released, being released, deleted).
	ErrNotHeld = errors.New("quarantine: item is not held")
	// ErrConflict: an update lost a compare-and-set race too many times.
	ErrConflict = errors.New("quarantine: concurrent update")
)

// Reason is one policy reason with the rule's explanation.
type Reason struct {
	Code        string `json:"code"`
	Msg         string `json:"msg,omitempty"`
	Title       string `json:"title,omitempty"`
	Description string `json:"description,omitempty"`
}

// Decision is the policy decision that held the message.
type Decision struct {
	Action         string   `json:"action"`
	Reasons        []Reason `json:"reasons,omitempty"`
	PolicyRevision string   `json:"policy_revision,omitempty"`
	DecisionID     string   `json:"decision_id,omitempty"`
	DryRun         bool     `json:"dry_run,omitempty"`
}

// Event is one entry of an item's history: who did what when.
type Event struct {
	At     time.Time `json:"at"`
	Action string    `json:"action"`
	By     string    `json:"by,omitempty"`
	Note   string    `json:"note,omitempty"`
}

// Meta is everything known about a held message except its bytes. It is
// stored as JSON next to the message.
type Meta struct {
	Version  int       `json:"version"`
	ID       string    `json:"id"`
	Received time.Time `json:"received"`
	// TxID is the gateway's transaction id (the "(id mxg-…)" the sender saw).
	TxID       string   `json:"tx_id,omitempty"`
	ClientIP   string   `json:"client_ip,omitempty"`
	Helo       string   `json:"helo,omitempty"`
	PTR        string   `json:"ptr,omitempty"`
	TLS        string   `json:"tls,omitempty"`
	MailFrom   string   `json:"mail_from"`
	Rcpts      []string `json:"rcpts"`
	HeaderFrom string   `json:"header_from,omitempty"`
	Subject    string   `json:"subject,omitempty"`
	MessageID  string   `json:"message_id,omitempty"`
	Size       int64    `json:"size"`
	Decision   Decision `json:"decision"`
	// Auth is the transaction's auth facts (spf, dkim, dmarc) as the gateway
	// recorded them; opaque to this package.
	Auth    json.RawMessage `json:"auth,omitempty"`
	Status  string          `json:"status"`
	History []Event         `json:"history,omitempty"`
	// Route is the recipient domain whose downstream route Release uses.
	Route string `json:"route,omitempty"`
	// Damaged is set only in List results for an item whose metadata cannot
	// be read (Status is then StatusDamaged); it says why.
	Damaged string `json:"damaged,omitempty"`
}

// Filter selects items for List. Zero fields match everything. String
// matches are case-insensitive.
type Filter struct {
	// Since: received at or after this time.
	Since time.Time
	// Reason: one of the decision's reason codes equals it.
	Reason string
	// From: substring of the envelope sender or header From.
	From string
	// Rcpt: substring of one of the recipients.
	Rcpt string
	// Domain: the domain of the envelope sender, header From or a recipient
	// equals it.
	Domain string
	// Status: held, releasing, released, deleted or damaged.
	Status string
	// Limit is the page size (default 50, at most MaxLimit).
	Limit int
	// Cursor is the next value of a previous List; empty for the first page.
	Cursor string
}

// MaxLimit bounds one List page.
const MaxLimit = 1000

// Store is what the gateway needs to hold messages and what readers need to
// look at them.
type Store interface {
	// Put stores the message and its metadata durably (fsync or the backend's
	// equivalent) before it returns, and returns the new item's id. The id,
	// Version and Status (held) are set here; Received defaults to now.
	Put(ctx context.Context, m Meta, msg io.Reader) (id string, err error)
	// Get returns an item's metadata: ErrBadID, ErrNotFound or ErrDamaged.
	Get(ctx context.Context, id string) (Meta, error)
	// Open returns the stored message bytes.
	Open(ctx context.Context, id string) (io.ReadCloser, error)
	// List returns matching items newest first and a cursor for the next
	// page ("" when there is none). Damaged items are listed with Status
	// StatusDamaged.
	List(ctx context.Context, f Filter) (items []Meta, next string, err error)
}

// Admin is a Store that reviewers can change.
type Admin interface {
	Store
	// Update atomically reads an item's metadata, lets fn change it, and
	// writes it back: a compare-and-set, safe across goroutines and
	// processes. If fn returns an error nothing is written and Update
	// returns that error.
	Update(ctx context.Context, id string, fn func(*Meta) error) (Meta, error)
	// Delete marks a held or released item deleted, records ev in its
	// history and drops the message body; the metadata stays, for the
	// audit trail, until it is purged. Any other status: ErrNotHeld.
	Delete(ctx context.Context, id string, ev Event) error
	// Purge removes every item stored before olderThan, whatever its
	// status, and leftovers of interrupted writes. It returns the number of
	// items removed.
	Purge(ctx context.Context, olderThan time.Time) (n int, err error)
}

// Deliverer sends a message downstream; *relay.Relay satisfies it.
type Deliverer interface {
	Deliver(ctx context.Context, domain, from string, rcpts []string, msg io.Reader) error
}

// ids: "q-" + 26 base32hex digits of 128 bits: a 48-bit millisecond
// timestamp then 80 random bits. base32hex keeps the byte order, so ids sort
// by the time they were stored, which List and Purge rely on.
const (
	idPrefix = "q-"
	idLen    = len(idPrefix) + 26
)

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

func newID(now time.Time) (string, error) {
	var b [16]byte
	ms := uint64(now.UnixMilli())
	binary.BigEndian.PutUint64(b[:8], ms<<16)
	if _, err := rand.Read(b[6:]); err != nil {
		return "", fmt.Errorf("quarantine id: %w", err)
	}
	return idPrefix + idEncoding.EncodeToString(b[:]), nil
}

// ValidID reports whether id has the exact shape newID produces. Only such
// ids are ever turned into file names or Redis keys.
func ValidID(id string) bool {
	if len(id) != idLen || !strings.HasPrefix(id, idPrefix) {
		return false
	}
	for i := len(idPrefix); i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'v') {
			return false
		}
	}
	// 26 base32 digits carry 130 bits; the last digit's low 2 bits are
	// padding and must be 0, so every item has exactly one spelling.
	last := id[len(id)-1]
	v := last - '0'
	if last >= 'a' {
		v = last - 'a' + 10
	}
	return v&3 == 0
}

// CheckID returns nil for a valid id and otherwise an error wrapping ErrBadID
// that shows (a bounded, quoted prefix of) the id.
func CheckID(id string) error { return checkID(id) }

// checkID returns ErrBadID wrapped with a printable, bounded rendering of id.
func checkID(id string) error {
	if ValidID(id) {
		return nil
	}
	show := id
	if len(show) > 40 {
		show = show[:40] + "..."
	}
	return fmt.Errorf("%w %q (want q- and 26 characters of [0-9a-v], got %d bytes)", ErrBadID, show, len(id))
}

// idTime is when the item with a valid id was stored.
func idTime(id string) time.Time {
	b, err := idEncoding.DecodeString(id[len(idPrefix):])
	if err != nil || len(b) < 8 {
		return time.Time{}
	}
	ms := binary.BigEndian.Uint64(b[:8]) >> 16
	return time.UnixMilli(int64(ms)).UTC()
}

// idFloor is the smallest id stored at or after t: ids below it are older.
func idFloor(t time.Time) string {
	var b [16]byte
	ms := t.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	binary.BigEndian.PutUint64(b[:8], uint64(ms)<<16)
	return idPrefix + idEncoding.EncodeToString(b[:])
}

// prepare fills in what Put owns.
func prepare(m *Meta, id string, now time.Time) {
	m.Version = MetaVersion
	m.ID = id
	m.Status = StatusHeld
	m.Damaged = ""
	if m.Received.IsZero() {
		m.Received = now
	}
	m.Received = m.Received.UTC()
	if m.Rcpts == nil {
		m.Rcpts = []string{}
	}
	m.History = append(m.History, Event{At: now.UTC(), Action: "held", By: "mxguard"})
}

func limitOf(f Filter) int {
	switch {
	case f.Limit <= 0:
		return 50
	case f.Limit > MaxLimit:
		return MaxLimit
	}
	return f.Limit
}

// checkFilter validates the parts of a filter that reach a backend.
func checkFilter(f Filter) error {
	if f.Cursor != "" && !ValidID(f.Cursor) {
		return fmt.Errorf("quarantine list: bad cursor: %w", checkID(f.Cursor))
	}
	switch f.Status {
	case "", StatusHeld, StatusReleasing, StatusReleased, StatusDeleted, StatusDamaged:
	default:
		return fmt.Errorf("quarantine list: unknown status %q (held, releasing, released, deleted, damaged)", f.Status)
	}
	return nil
}

// Match reports whether m passes every set field of f (paging aside).
func (f Filter) Match(m Meta) bool {
	if f.Status != "" && m.Status != f.Status {
		return false
	}
	if m.Status == StatusDamaged {
		// Nothing else is known about a damaged item: only an unfiltered
		// (or status=damaged) listing shows it.
		return f.Since.IsZero() && f.Reason == "" && f.From == "" && f.Rcpt == "" && f.Domain == ""
	}
	if !f.Since.IsZero() && m.Received.Before(f.Since) {
		return false
	}
	if f.Reason != "" {
		found := false
		for _, r := range m.Decision.Reasons {
			if strings.EqualFold(r.Code, f.Reason) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if f.From != "" && !containsFold(m.MailFrom, f.From) && !containsFold(m.HeaderFrom, f.From) {
		return false
	}
	if f.Rcpt != "" {
		found := false
		for _, r := range m.Rcpts {
			if containsFold(r, f.Rcpt) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if f.Domain != "" {
		d := strings.TrimSuffix(f.Domain, ".")
		found := strings.EqualFold(domainOf(m.MailFrom), d) || strings.EqualFold(domainOf(m.HeaderFrom), d)
		for _, r := range m.Rcpts {
			found = found || strings.EqualFold(domainOf(r), d)
		}
		if !found {
			return false
		}
	}
	return true
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.TrimSuffix(addr[i+1:], ">")
}

// damagedMeta is what List shows for an item whose metadata cannot be read.
func damagedMeta(id string, err error) Meta {
	return Meta{ID: id, Received: idTime(id), Status: StatusDamaged, Damaged: err.Error()}
}

// decodeMeta parses stored metadata and checks it belongs to id.
func decodeMeta(id string, b []byte) (Meta, error) {
	var m Meta
	if err := json.Unmarshal(b, &m); err != nil {
		return Meta{}, fmt.Errorf("%w: %s: %v", ErrDamaged, id, err)
	}
	if m.ID != id {
		return Meta{}, fmt.Errorf("%w: %s: metadata names item %q", ErrDamaged, id, m.ID)
	}
	switch m.Status {
	case StatusHeld, StatusReleasing, StatusReleased, StatusDeleted:
	default:
		return Meta{}, fmt.Errorf("%w: %s: unknown status %q", ErrDamaged, id, m.Status)
	}
	return m, nil
}

// maxHistory bounds an item's history so repeated failed releases cannot
// grow metadata without limit; the first event (held) is always kept.
const maxHistory = 100

func addEvent(m *Meta, ev Event) {
	m.History = append(m.History, ev)
	if len(m.History) > maxHistory {
		m.History = append(m.History[:1], m.History[len(m.History)-maxHistory+1:]...)
	}
}
