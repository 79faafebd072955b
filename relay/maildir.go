package relay

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
)

// maildirConn delivers into a maildir (the "maildir:PATH" route) for demos
// and dry runs. The envelope is not stored: the file holds exactly the
// bytes Data was given.
type maildirConn struct {
	dir    string
	inMail bool
	rcpts  int
}

var errNoTransaction = errors.New("relay: maildir: DATA without MAIL and RCPT")

func (m *maildirConn) Mail(string, *smtp.MailOptions) error {
	m.inMail, m.rcpts = true, 0
	return nil
}

// Rcpt accepts every address: a maildir has no mailboxes to check.
func (m *maildirConn) Rcpt(string, *smtp.RcptOptions) error {
	if !m.inMail {
		return errNoTransaction
	}
	m.rcpts++
	return nil
}

func (m *maildirConn) Data(msg io.Reader) error {
	if !m.inMail || m.rcpts == 0 {
		return errNoTransaction
	}
	m.inMail, m.rcpts = false, 0
	if err := deliverMaildir(m.dir, msg); err != nil {
		return fmt.Errorf("relay: maildir %s: %w", m.dir, err)
	}
	return nil
}

func (m *maildirConn) Reset() error {
	m.inMail, m.rcpts = false, 0
	return nil
}

func (m *maildirConn) Close() error { return nil }

var maildirSeq atomic.Uint64

var maildirHost = sync.OnceValue(func() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	// Maildir names must not contain "/" or ":" (the info separator).
	return strings.NewReplacer("/", `\057`, ":", `\072`).Replace(h)
})

// maildirName returns a unique file name in the maildir convention
// (time.MusecPpidQseqRrand.host); the random part keeps names unique across
// hosts or containers sharing a directory and reusing pids.
func maildirName() (string, error) {
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", err
	}
	now := time.Now()
	return fmt.Sprintf("%d.M%dP%dQ%dR%s.%s", now.Unix(), now.Nanosecond()/1000, os.Getpid(),
		maildirSeq.Add(1), hex.EncodeToString(rnd[:]), maildirHost()), nil
}

// deliverMaildir writes msg to tmp/, syncs it, renames it into new/ and syncs
// new/, so that a message is in new/ completely or not at all, and stays
// there across a crash once this returns nil.
func deliverMaildir(dir string, msg io.Reader) (err error) {
	for _, sub := range []string{"tmp", "new", "cur"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return err
		}
	}
	name, err := maildirName()
	if err != nil {
		return err
	}
	tmp := filepath.Join(dir, "tmp", name)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bp := copyBufs.Get().(*[]byte)
	_, err = io.CopyBuffer(f, onlyReader{msg}, *bp)
	copyBufs.Put(bp)
	if err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, filepath.Join(dir, "new", name)); err != nil {
		return err
	}
	return syncDir(filepath.Join(dir, "new"))
}

func syncDir(path string) error {
	d, err := os.Open(path)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
