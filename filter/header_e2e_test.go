package filter_test

import (
	"strings"
	"testing"
	"time"
)

// TestObsoleteFieldNameSyntaxIsSeen: RFC 5322 4.5 field names may be
// followed by white space before the colon, and readers honour that form.
// A forged Authentication-Results in that form must be stripped like any
// other, and a second From in that form must count as a second From.
func TestObsoleteFieldNameSyntaxIsSeen(t *testing.T) {
	g := startGW(t)
	forged := "Authentication-Results : mx.test; dmarc=pass header.from=bank.example\r\n" +
		"From : <ceo@bank.example>\r\n"
	code, text := g.sendMail("alice@example.org", []string{"bob@corp.test"}, forged+msg("alice@example.org", "bob@corp.test", "x", "x\r\n"))
	if code != 250 {
		t.Fatalf("got %d %q", code, text)
	}
	data := string(g.down.WaitMessages(t, 1, 5*time.Second)[0].Data)
	if strings.Contains(data, "Authentication-Results : mx.test") {
		t.Errorf("a forged Authentication-Results claiming mx.test was relayed:\n%s", data)
	}
	if strings.Contains(data, "dmarc=pass") {
		t.Errorf("DMARC passed a message with two From fields:\n%s", data)
	}
}
