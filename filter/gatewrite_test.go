package filter

import (
	"io"
	"net"
	"testing"
	"time"
)

// writeCounter counts the writes that reach the socket.
type writeCounter struct {
	net.Conn
	writes int
}

func (w *writeCounter) Write(p []byte) (int, error) {
	w.writes++
	return w.Conn.Write(p)
}

// TestGateConnBatchesReplies: replies written one by one (go-smtp flushes
// each) reach the socket as one write when the connection is next read,
// in order; Close sends what is still held.
func TestGateConnBatchesReplies(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	wc := &writeCounter{Conn: a}
	gc := &gateConn{Conn: wc}
	got := make(chan string, 2)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := b.Read(buf)
			if n > 0 {
				got <- string(buf[:n])
			}
			if err != nil {
				close(got)
				return
			}
		}
	}()
	for _, r := range []string{"250 2.1.0 ok\r\n", "250 2.1.5 ok\r\n", "354 go ahead\r\n"} {
		if _, err := io.WriteString(gc, r); err != nil {
			t.Fatal(err)
		}
	}
	if wc.writes != 0 {
		t.Fatalf("%d writes before the read", wc.writes)
	}
	// The read sends the three replies, then waits for the sender.
	go func() { b.Write([]byte("x")) }()
	one := make([]byte, 1)
	if _, err := gc.Read(one); err != nil {
		t.Fatal(err)
	}
	if s := <-got; s != "250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n" || wc.writes != 1 {
		t.Fatalf("sent %q in %d writes", s, wc.writes)
	}
	io.WriteString(gc, "221 2.0.0 bye\r\n")
	gc.Close()
	select {
	case s := <-got:
		if s != "221 2.0.0 bye\r\n" {
			t.Fatalf("at close: %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not send the held reply")
	}
}
