package filter

import (
	"io"
	"sync"
)

// lineValidator checks DATA/BDAT content while it streams into the spool:
// bare CR, bare LF and NUL (the raw material of SMTP smuggling and of header
// confusion between parsers), and over-long lines. In normalize mode it also
// rewrites bare CR and bare LF to CRLF and drops NUL, so that nothing but CRLF
// line endings ever goes downstream.
type lineValidator struct {
	w         io.Writer
	normalize bool
	maxLine   int // octets per line, CRLF excluded; 0 = no limit

	pendingCR bool
	lineLen   int
	buf       []byte

	BareLF, BareCR, NUL, LongLine bool
}

var validatorBufs = sync.Pool{New: func() any { b := make([]byte, 0, 34<<10); return &b }}

func newLineValidator(w io.Writer, normalize bool, maxLine int) *lineValidator {
	v := &lineValidator{w: w, normalize: normalize, maxLine: maxLine}
	if normalize {
		v.buf = (*validatorBufs.Get().(*[]byte))[:0]
	}
	return v
}

// release returns the buffer to the pool; the validator is not used after.
func (v *lineValidator) release() {
	if v.buf != nil && cap(v.buf) <= 64<<10 {
		b := v.buf[:0]
		validatorBufs.Put(&b)
	}
	v.buf = nil
}

// Dirty reports whether anything but clean CRLF text was seen.
func (v *lineValidator) Dirty() bool { return v.BareLF || v.BareCR || v.NUL }

// special marks the bytes the validator must look at; everything else is
// copied in runs.
var special = [256]bool{'\r': true, '\n': true, 0: true}

// Write consumes p; it never fails except when the underlying writer does.
func (v *lineValidator) Write(p []byte) (int, error) {
	if !v.normalize {
		// Refusing mode passes the bytes through unchanged: a message
		// with anything to change is refused anyway, so there is nothing
		// to rewrite and no reason to copy every byte once more.
		v.scan(p)
		if _, err := v.w.Write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	out := v.buf[:0]
	for i := 0; i < len(p); {
		c := p[i]
		if !special[c] {
			// A run of ordinary bytes: copy it whole (the common case).
			j := i + 1
			for j < len(p) && !special[p[j]] {
				j++
			}
			if v.pendingCR {
				out = v.bareCR(out)
				v.pendingCR = false
			}
			v.lineLen += j - i
			if v.maxLine > 0 && v.lineLen > v.maxLine {
				v.LongLine = true
			}
			out = append(out, p[i:j]...)
			i = j
			continue
		}
		i++
		switch c {
		case '\r':
			if v.pendingCR {
				out = v.bareCR(out)
			}
			v.pendingCR = true
			continue
		case '\n':
			if !v.pendingCR {
				v.BareLF = true
			}
			v.pendingCR = false
			out = append(out, '\r', '\n')
			v.lineLen = 0
			continue
		}
		// NUL
		if v.pendingCR {
			out = v.bareCR(out)
			v.pendingCR = false
		}
		v.NUL = true
		if v.normalize {
			continue
		}
		v.lineLen++
		if v.maxLine > 0 && v.lineLen > v.maxLine {
			v.LongLine = true
		}
		out = append(out, c)
	}
	v.buf = out[:0]
	if len(out) > 0 {
		if _, err := v.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// scan is Write's state machine without output, for refusing mode.
func (v *lineValidator) scan(p []byte) {
	for i := 0; i < len(p); {
		c := p[i]
		if !special[c] {
			j := i + 1
			for j < len(p) && !special[p[j]] {
				j++
			}
			if v.pendingCR {
				v.BareCR, v.lineLen, v.pendingCR = true, 0, false
			}
			v.lineLen += j - i
			if v.maxLine > 0 && v.lineLen > v.maxLine {
				v.LongLine = true
			}
			i = j
			continue
		}
		i++
		switch c {
		case '\r':
			if v.pendingCR {
				v.BareCR, v.lineLen = true, 0
			}
			v.pendingCR = true
			continue
		case '\n':
			if !v.pendingCR {
				v.BareLF = true
			}
			v.pendingCR, v.lineLen = false, 0
			continue
		}
		// NUL
		if v.pendingCR {
			v.BareCR, v.lineLen, v.pendingCR = true, 0, false
		}
		v.NUL = true
		v.lineLen++
		if v.maxLine > 0 && v.lineLen > v.maxLine {
			v.LongLine = true
		}
	}
}

// bareCR handles a CR not followed by LF: a line break in normalize mode,
// kept as is otherwise (the message is then refused anyway).
func (v *lineValidator) bareCR(out []byte) []byte {
	v.BareCR = true
	v.lineLen = 0
	if v.normalize {
		return append(out, '\r', '\n')
	}
	return append(out, '\r')
}

// Close flushes a trailing CR (refusing mode passed it through already).
func (v *lineValidator) Close() error {
	if v.pendingCR {
		v.pendingCR = false
		if !v.normalize {
			v.BareCR = true
			return nil
		}
		out := v.bareCR(v.buf[:0])
		if _, err := v.w.Write(out); err != nil {
			return err
		}
	}
	return nil
}
