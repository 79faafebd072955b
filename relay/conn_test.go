package relay

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes int
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes++
	return c.Conn.Write(p)
}

// TestLimitConnHoldsWritesUntilRead: a message body written in go-smtp's
// 4 KiB pieces and its final dot reach the socket as one write, made when
// the client turns to read the reply; nothing is lost or reordered.
func TestLimitConnHoldsWritesUntilRead(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		var buf bytes.Buffer
		for !bytes.HasSuffix(buf.Bytes(), []byte("\r\n.\r\n")) {
			b := make([]byte, 4096)
			n, err := c.Read(b)
			buf.Write(b[:n])
			if err != nil {
				break
			}
		}
		got <- buf.Bytes()
		io.WriteString(c, "250 ok\r\n")
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := &countingConn{Conn: raw}
	lc := &limitConn{Conn: cc}
	defer lc.Close()

	body := strings.Repeat("x", 4094) + "\r\n" + strings.Repeat("y", 200) + "\r\n"
	for _, piece := range []string{body[:4096], body[4096:], ".\r\n"} {
		if _, err := io.WriteString(lc, piece); err != nil {
			t.Fatal(err)
		}
	}
	if cc.writes != 0 {
		t.Fatalf("%d writes before the read, want them held", cc.writes)
	}
	reply := make([]byte, 64)
	n, err := lc.Read(reply)
	if err != nil || string(reply[:n]) != "250 ok\r\n" {
		t.Fatalf("reply %q, %v", reply[:n], err)
	}
	if cc.writes != 1 {
		t.Errorf("%d writes, want 1", cc.writes)
	}
	if b := <-got; string(b) != body+".\r\n" {
		t.Errorf("downstream got %d bytes, want %d in order", len(b), len(body)+3)
	}

	// More than maxPending waiting is sent at once, in order.
	big := bytes.Repeat([]byte("z"), maxPending+100)
	cc.writes = 0
	lc.Write(big[:100])
	lc.Write(big[100:])
	if cc.writes != 2 {
		t.Errorf("%d writes for %d bytes, want 2", cc.writes, len(big))
	}
}
