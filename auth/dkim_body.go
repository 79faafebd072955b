package auth

import (
	"hash"
	"strings"
)

// dkimCanonBody canonicalizes a message body for one l= signature (RFC 6376
// 3.4.3 simple, 3.4.4 relaxed), streaming with O(1) state: it hashes the first
// limit canonical octets into h and counts all of them, so that we know both
// the l= body hash and whether content follows the signed length.
type dkimCanonBody struct {
	relaxed bool
	h       hash.Hash // nil: count only
	limit   int64

	written      int64 // canonical octets so far (all, not only hashed)
	pendingEmpty int64 // empty lines held back: trailing ones are dropped
	pendingCR    bool
	wsp          bool // relaxed: a WSP run is pending inside the line
	started      bool // something of the current line was emitted
}

// newDKIMCanonBody returns a canonicalizer for the body part of a c= value
// ("header/body"; the body part defaults to simple, RFC 6376 3.5).
func newDKIMCanonBody(canon string, h hash.Hash, limit int64) *dkimCanonBody {
	_, body, _ := strings.Cut(strings.ToLower(dkimStripFWS(canon)), "/")
	return &dkimCanonBody{relaxed: body == "relaxed", h: h, limit: limit}
}

var dkimCRLF = []byte("\r\n")

func (c *dkimCanonBody) emit(p []byte) {
	if c.h != nil && c.written < c.limit {
		n := min(int64(len(p)), c.limit-c.written)
		c.h.Write(p[:n])
	}
	c.written += int64(len(p))
}

// Write never fails.
func (c *dkimCanonBody) Write(p []byte) (int, error) {
	for _, b := range p {
		if c.pendingCR {
			c.pendingCR = false
			if b == '\n' {
				c.endLine()
				continue
			}
			c.char('\r')
		}
		switch b {
		case '\r':
			c.pendingCR = true
		case '\n': // a bare LF ends a line too (go-msgauth fixes it to CRLF)
			c.endLine()
		default:
			c.char(b)
		}
	}
	return len(p), nil
}

func (c *dkimCanonBody) char(b byte) {
	if c.relaxed && (b == ' ' || b == '\t') {
		c.wsp = true // reduced to one SP, or dropped at the end of the line
		return
	}
	if !c.started {
		for ; c.pendingEmpty > 0; c.pendingEmpty-- {
			c.emit(dkimCRLF)
		}
		c.started = true
	}
	if c.wsp {
		c.emit([]byte{' '})
		c.wsp = false
	}
	c.emit([]byte{b})
}

func (c *dkimCanonBody) endLine() {
	if c.started {
		c.emit(dkimCRLF)
	} else {
		c.pendingEmpty++
	}
	c.started, c.wsp = false, false
}

// Close ends a last line without CRLF (canonicalization adds one) and gives an
// empty simple body its CRLF (RFC 6376 3.4.3).
func (c *dkimCanonBody) Close() {
	if c.pendingCR {
		c.pendingCR = false
		c.char('\r')
	}
	if c.started {
		c.endLine()
	}
	if !c.relaxed && c.written == 0 {
		c.emit(dkimCRLF)
	}
}
