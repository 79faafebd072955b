package filter_test

import (
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/mxguard/mxguard/filter"
)

// cleanMessage builds a clean CRLF message of about size bytes.
func cleanMessage(size int) []byte {
	var b strings.Builder
	b.WriteString(msg("alice@example.org", "bob@corp.test", "benchmark", ""))
	line := "The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
	for b.Len()+len(line) <= size {
		b.WriteString(line)
	}
	for b.Len() < size-2 {
		b.WriteByte('x')
	}
	b.WriteString("\r\n")
	return []byte(b.String())
}

// BenchmarkLineValidator runs the DATA validator over a clean 64 KiB
// message, written in 32 KiB pieces as io.Copy does in Data.
func BenchmarkLineValidator(b *testing.B) {
	m := cleanMessage(64 << 10)
	for _, normalize := range []bool{false, true} {
		b.Run(fmt.Sprintf("normalize=%v", normalize), func(b *testing.B) {
			b.SetBytes(int64(len(m)))
			b.ReportAllocs()
			for b.Loop() {
				v := filter.NewLineValidatorForTest(io.Discard, normalize, 998)
				for rest := m; len(rest) > 0; {
					n := min(len(rest), 32<<10)
					if _, err := v.Write(rest[:n]); err != nil {
						b.Fatal(err)
					}
					rest = rest[n:]
				}
				if err := v.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// typicalHeader is a 20-field header section as relayed mail carries it.
const typicalHeader = "Received: from mail-out.example.org (mail-out.example.org [192.0.2.10])\r\n" +
	"\tby mx1.example.net (Postfix) with ESMTPS id 4Xyz1234\r\n" +
	"\tfor <bob@corp.test>; Fri, 27 Nov 2026 10:00:00 +0000 (UTC)\r\n" +
	"Received: from internal.example.org (internal.example.org [10.0.0.5])\r\n" +
	"\tby mail-out.example.org with ESMTP id abc; Fri, 27 Nov 2026 09:59:59 +0000\r\n" +
	"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=sel1;\r\n" +
	"\th=from:to:subject:date:message-id:mime-version:content-type;\r\n" +
	"\tbh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r\n" +
	"\tb=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSBidXQgaXQgaGFzIHRoZSByaWdodCBsZW5n\r\n" +
	"\t dGggZm9yIGEgYmVuY2htYXJrIG9mIHRoZSBoZWFkZXIgcGFyc2VyIGluIG14Z3VhcmQuLi4uLg==\r\n" +
	"ARC-Seal: i=1; a=rsa-sha256; t=1795773600; cv=none; d=example.org; s=arc;\r\n" +
	"\tb=c2VhbHNlYWxzZWFsc2VhbHNlYWxzZWFsc2VhbHNlYWxzZWFs\r\n" +
	"Authentication-Results: mx1.example.net; spf=pass smtp.mailfrom=example.org\r\n" +
	"From: Alice Example <alice@example.org>\r\n" +
	"To: Bob <bob@corp.test>\r\n" +
	"Reply-To: <alice@example.org>\r\n" +
	"Cc: carol@corp.test, dave@corp.test\r\n" +
	"Subject: =?UTF-8?Q?Q4_invoice_=E2=80=93_please_review?=\r\n" +
	"Date: Fri, 27 Nov 2026 09:59:58 +0000\r\n" +
	"Message-ID: <20261127095958.12345@example.org>\r\n" +
	"In-Reply-To: <20261126080000.1@corp.test>\r\n" +
	"References: <20261126080000.1@corp.test>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"b1_5f2c9a1e7b3d\"\r\n" +
	"Content-Transfer-Encoding: 7bit\r\n" +
	"List-Unsubscribe: <mailto:unsub@example.org>\r\n" +
	"X-Mailer: Example Mailer 1.0\r\n" +
	"Return-Path: <alice@example.org>\r\n" +
	"\r\n"

func BenchmarkParseHeader(b *testing.B) {
	head := []byte(typicalHeader + "body\r\n")
	if n, off, err := filter.ParseHeaderForTest(head); err != nil || n != 20 || off != len(typicalHeader) {
		b.Fatalf("fixture: %d fields, body at %d (want 20, %d), %v", n, off, len(typicalHeader), err)
	}
	b.SetBytes(int64(len(typicalHeader)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := filter.ParseHeaderForTest(head); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGatewayThroughput sends b.N messages of 4 KiB through the
// gateway (every check on, DNS from the local test server) to a downstream
// that discards them, over one reused connection or a fresh connection per
// message, with and without STARTTLS. Client, gateway and downstream share
// the process, so allocs/op counts all three per message.
func BenchmarkGatewayThroughput(b *testing.B) {
	body := cleanMessage(4 << 10)
	for _, fresh := range []bool{false, true} {
		for _, useTLS := range []bool{false, true} {
			name := fmt.Sprintf("conn=reused/tls=%v", useTLS)
			if fresh {
				name = fmt.Sprintf("conn=fresh/tls=%v", useTLS)
			}
			b.Run(name, func(b *testing.B) {
				srvTLS, roots := testenvCert(b)
				g := startGW(b, func(o *filter.Options, s *gwSetup) {
					s.downOpts.Discard = true
					o.Gate.MaxConnsPerIP = 1000
					o.Gate.MaxConns = 1000
					if useTLS {
						o.TLSConfig = srvTLS
					}
				})
				open := func() *client {
					cl := g.greet("client.example.org")
					if useTLS {
						cl.startTLS(roots)
						cl.cmd("EHLO client.example.org", 250)
					}
					return cl
				}
				send := func(cl *client) {
					cl.cmd("MAIL FROM:<alice@example.org>", 250)
					cl.cmd("RCPT TO:<bob@corp.test>", 250)
					cl.cmd("DATA", 354)
					cl.send(string(body) + ".\r\n")
					cl.expect(250)
				}
				// Warm the DNS cache and the TLS session setup paths.
				warm := open()
				send(warm)
				warm.cmd("QUIT", 221)
				warm.c.Close()

				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				b.ResetTimer()
				if fresh {
					for i := 0; i < b.N; i++ {
						cl := open()
						send(cl)
						cl.cmd("QUIT", 221)
						cl.closed()
						cl.c.Close()
					}
				} else {
					cl := open()
					for i := 0; i < b.N; i++ {
						send(cl)
					}
					cl.cmd("QUIT", 221)
				}
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
				if got := g.down.Delivered(); got != b.N+1 {
					b.Fatalf("downstream got %d messages, want %d", got, b.N+1)
				}
			})
		}
	}
}
