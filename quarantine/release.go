package quarantine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// maxByLen bounds the reviewer name recorded in history and headers.
const maxByLen = 64

// CheckBy validates a reviewer name: it goes into an email header, so only a
// short run of letters, digits and ._@+- is allowed (no spaces, no CR/LF).
func CheckBy(by string) error {
	if by == "" || len(by) > maxByLen {
		return fmt.Errorf("reviewer name must be 1-%d characters, got %d", maxByLen, len(by))
	}
	for i := 0; i < len(by); i++ {
		c := by[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._@+-", c) >= 0) {
			return fmt.Errorf("reviewer name %q: character %q not allowed (letters, digits and ._@+- only)", by, c)
		}
	}
	return nil
}

// finishTimeout bounds the bookkeeping after a delivery, which runs even if
// the caller's context was cancelled meanwhile (the claim must not be left
// behind because a reviewer pressed ^C at the wrong moment).
const finishTimeout = 30 * time.Second

// Release delivers a held item to its stored recipients exactly once.
//
// It first claims the item (held → releasing, a compare-and-set), so a
// second Release of the same item, in this process or another gateway,
// returns ErrNotHeld without delivering. It then delivers the stored message
// with an X-MXGuard-Released header prepended, through d to the item's Route
// domain, and marks the item released. A failed delivery returns the claim
// (the item is held again) and the error; a delivery that succeeded but
// could not be recorded leaves the item "releasing", never to be delivered
// twice, and returns an error saying so.
func Release(ctx context.Context, a Admin, id, by string, d Deliverer) error {
	return release(ctx, a, id, by, d, time.Now)
}

func release(ctx context.Context, a Admin, id, by string, d Deliverer, now func() time.Time) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := CheckBy(by); err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	}
	at := now().UTC()
	m, err := a.Update(ctx, id, func(m *Meta) error {
		if m.Status != StatusHeld {
			return fmt.Errorf("%w: %s is %s", ErrNotHeld, id, m.Status)
		}
		m.Status = StatusReleasing
		addEvent(m, Event{At: at, Action: "claim", By: by})
		return nil
	})
	if err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	}

	derr := deliver(ctx, a, m, by, at, d)

	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), finishTimeout)
	defer cancel()
	_, uerr := a.Update(fctx, id, func(m *Meta) error {
		if m.Status != StatusReleasing {
			return fmt.Errorf("%w: %s is %s, expected releasing", ErrConflict, id, m.Status)
		}
		if derr != nil {
			m.Status = StatusHeld
			addEvent(m, Event{At: now().UTC(), Action: "release-failed", By: by, Note: truncate(derr.Error(), 300)})
			return nil
		}
		m.Status = StatusReleased
		addEvent(m, Event{At: now().UTC(), Action: "released", By: by,
			Note: fmt.Sprintf("to %d recipient(s) via %s", len(m.Rcpts), routeOf(*m))})
		return nil
	})
	switch {
	case derr != nil && uerr != nil:
		return fmt.Errorf("release %s: %w (and the claim could not be returned, the item stays releasing: %v)", id, derr, uerr)
	case derr != nil:
		return fmt.Errorf("release %s: %w", id, derr)
	case uerr != nil:
		return fmt.Errorf("release %s: delivered, but not recorded as released (the item stays releasing and will not be delivered again): %w", id, uerr)
	}
	return nil
}

func deliver(ctx context.Context, a Admin, m Meta, by string, at time.Time, d Deliverer) error {
	if len(m.Rcpts) == 0 {
		return errors.New("item has no recipients")
	}
	body, err := a.Open(ctx, m.ID)
	if err != nil {
		return err
	}
	defer body.Close()
	hdr := fmt.Sprintf("X-MXGuard-Released: by=%s; at=%s; id=%s\r\n", by, at.Format(time.RFC3339), m.ID)
	msg := io.MultiReader(strings.NewReader(hdr), body)
	if err := d.Deliver(ctx, routeOf(m), m.MailFrom, m.Rcpts, msg); err != nil {
		return fmt.Errorf("deliver: %w", err)
	}
	return nil
}

// routeOf is the domain whose downstream gets the released message: the
// stored Route, else the first recipient's domain.
func routeOf(m Meta) string {
	if m.Route != "" {
		return m.Route
	}
	if len(m.Rcpts) > 0 {
		return strings.ToLower(domainOf(m.Rcpts[0]))
	}
	return ""
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// Delete marks an item deleted by a reviewer (see Admin.Delete).
func Delete(ctx context.Context, a Admin, id, by string) error {
	if err := checkID(id); err != nil {
		return err
	}
	if err := CheckBy(by); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	if err := a.Delete(ctx, id, Event{At: time.Now().UTC(), Action: "deleted", By: by}); err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	return nil
}

// Sweep purges items older than retention, as of now(). A retention of zero
// or less keeps everything. serve calls it periodically; `mxguard
// quarantine purge` calls it once.
func Sweep(ctx context.Context, a Admin, retention time.Duration, now func() time.Time) (int, error) {
	if retention <= 0 {
		return 0, nil
	}
	n, err := a.Purge(ctx, now().Add(-retention))
	if err != nil {
		return n, fmt.Errorf("quarantine sweep: %w", err)
	}
	return n, nil
}

// StaleClaimAge is how old a release claim must be before ResetClaim may
// take it back: far longer than any delivery (bounded by the relay's
// timeouts) takes.
const StaleClaimAge = 30 * time.Minute

// ResetClaim returns an item stuck in "releasing" to held. That happens only
// when a Release died (process killed, store unreachable) between claiming
// the item and recording the outcome, so whether the message reached the
// downstream is unknown: releasing it again may deliver it twice. This is
// why it is a separate, explicit step (`quarantine release --force`), and
// why a claim younger than minAge (a Release possibly still running) is
// refused with ErrConflict.
func ResetClaim(ctx context.Context, a Admin, id, by string, minAge time.Duration) (Meta, error) {
	if err := checkID(id); err != nil {
		return Meta{}, err
	}
	if err := CheckBy(by); err != nil {
		return Meta{}, fmt.Errorf("reset claim %s: %w", id, err)
	}
	now := time.Now().UTC()
	m, err := a.Update(ctx, id, func(m *Meta) error {
		if m.Status != StatusReleasing {
			return fmt.Errorf("%w: %s is %s, not releasing", ErrNotHeld, id, m.Status)
		}
		var claimed Event
		for _, ev := range m.History {
			if ev.Action == "claim" {
				claimed = ev
			}
		}
		if age := now.Sub(claimed.At); age < minAge {
			return fmt.Errorf("%w: %s was claimed by %s %s ago; a release may still be running (wait until the claim is %s old)",
				ErrConflict, id, claimed.By, age.Round(time.Second), minAge)
		}
		m.Status = StatusHeld
		addEvent(m, Event{At: now, Action: "claim-reset", By: by,
			Note: fmt.Sprintf("claim by %s at %s reset; delivery outcome unknown", claimed.By, claimed.At.Format(time.RFC3339))})
		return nil
	})
	if err != nil {
		return Meta{}, fmt.Errorf("reset claim %s: %w", id, err)
	}
	return m, nil
}
