package quarantine

import (
	"bytes"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/relay"
)

// Release through the real relay to a recording downstream: a refused
// recipient returns the claim, a later release delivers exactly once.
func TestReleaseThroughRelay(t *testing.T) {
	down := testenv.StartDownstream(t, testenv.DownstreamOptions{})
	rl, err := relay.New(map[string]relay.Route{"corp.example": {Hosts: []string{down.Addr()}, TLS: relay.TLSNone}},
		relay.Options{HeloName: "mx.test", CommandTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenDir(filepath.Join(t.TempDir(), "q"), DirOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	msg := sampleMsg(1, 3000)
	id, err := s.Put(ctx, sampleMeta(1), bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}

	down.RefuseRcpt("carol@corp.example", 450, [3]int{4, 2, 1}, "mailbox busy")
	err = Release(ctx, s, id, "rev", rl)
	var re *relay.ReplyError
	if !errors.As(err, &re) || re.Code != 450 {
		t.Fatalf("Release with a refused recipient = %v", err)
	}
	if m, _ := s.Get(ctx, id); m.Status != StatusHeld || down.Delivered() != 0 {
		t.Fatalf("after refused release: %s, %d delivered", m.Status, down.Delivered())
	}

	down.RefuseRcpt("carol@corp.example", 0, [3]int{}, "")
	if err := Release(ctx, s, id, "rev", rl); err != nil {
		t.Fatal(err)
	}
	got := down.WaitMessages(t, 1, 5*time.Second)[0]
	if got.From != "alice1@example.org" || strings.Join(got.To, ",") != "bob@corp.example,carol@corp.example" ||
		!bytes.HasPrefix(got.Data, []byte("X-MXGuard-Released: by=rev; at=")) || !bytes.HasSuffix(got.Data, msg) {
		t.Fatalf("downstream got %s -> %v:\n%.200s", got.From, got.To, got.Data)
	}
	if err := Release(ctx, s, id, "rev", rl); !errors.Is(err, ErrNotHeld) {
		t.Fatalf("second Release = %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if down.Delivered() != 1 {
		t.Fatalf("downstream got %d messages", down.Delivered())
	}
}
