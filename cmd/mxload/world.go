package main

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/miekg/dns"
)

// Names of the synthetic world. .test is reserved (RFC 2606), so nothing
// here can leak to a real name server.
const (
	rcptDomain = "corp.mxload.test"
	rcptAddr   = "user@" + rcptDomain
	clientHelo = "client.mxload.test"
	selector   = "load"
)

// sender is one sending domain with its DKIM key.
type sender struct {
	domain string
	key    crypto.Signer
}

// world is the sender domains and the DNS records that make them pass SPF,
// DKIM and DMARC from 127.0.0.1.
type world struct {
	senders []sender
	records []dns.RR
}

// newWorld generates n sender domains, alternating RSA-2048 and Ed25519
// DKIM keys (RFC 8463), each with SPF ip4:127.0.0.1, a DKIM key record and
// DMARC p=reject; plus forward-confirmed reverse DNS for 127.0.0.1.
func newWorld(n int) (*world, error) {
	w := &world{}
	ttl := uint32(3600)
	txt := func(name string, s string) dns.RR {
		return &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: ttl},
			Txt: splitTXT(s)}
	}
	for i := 0; i < n; i++ {
		d := fmt.Sprintf("s%02d.mxload.test", i)
		var key crypto.Signer
		var rec string
		if i%2 == 0 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				return nil, err
			}
			der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
			if err != nil {
				return nil, err
			}
			key, rec = k, "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der)
		} else {
			pub, k, err := ed25519.GenerateKey(rand.Reader)
			if err != nil {
				return nil, err
			}
			key, rec = k, "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub)
		}
		w.senders = append(w.senders, sender{domain: d, key: key})
		w.records = append(w.records,
			txt(d, "v=spf1 ip4:127.0.0.1 -all"),
			txt(selector+"._domainkey."+d, rec),
			txt("_dmarc."+d, "v=DMARC1; p=reject"),
			&dns.MX{Hdr: dns.RR_Header{Name: dns.Fqdn(d), Rrtype: dns.TypeMX, Class: dns.ClassINET, Ttl: ttl},
				Preference: 10, Mx: dns.Fqdn(clientHelo)},
		)
	}
	w.records = append(w.records,
		&dns.PTR{Hdr: dns.RR_Header{Name: "1.0.0.127.in-addr.arpa.", Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: ttl},
			Ptr: dns.Fqdn(clientHelo)},
		&dns.A{Hdr: dns.RR_Header{Name: dns.Fqdn(clientHelo), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A: net.IPv4(127, 0, 0, 1)},
	)
	return w, nil
}

// splitTXT cuts s into character-strings of at most 255 bytes (RFC 1035
// 3.3.14); a DKIM RSA-2048 key record is longer than one.
func splitTXT(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}

// message is one prepared, signed message.
type message struct {
	from string
	data []byte
}

// messages builds perDomain distinct DKIM-signed messages of about size
// bytes for every sender. Signing happens here, before any timed run, so the
// generator's own CPU is spent outside the measurement (the gateway and the
// generator share the machine's cores).
func (w *world) messages(size, perDomain int) ([]message, error) {
	var out []message
	for v := 0; v < perDomain; v++ {
		for _, s := range w.senders {
			from := fmt.Sprintf("sender%d@%s", v, s.domain)
			raw := buildMessage(from, size, v)
			var signed bytes.Buffer
			opts := &dkim.SignOptions{
				Domain:                 s.domain,
				Selector:               selector,
				Signer:                 s.key,
				HeaderCanonicalization: dkim.CanonicalizationRelaxed,
				BodyCanonicalization:   dkim.CanonicalizationRelaxed,
				HeaderKeys:             []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"},
			}
			if err := dkim.Sign(&signed, bytes.NewReader(raw), opts); err != nil {
				return nil, fmt.Errorf("dkim sign %s: %w", s.domain, err)
			}
			out = append(out, message{from: from, data: signed.Bytes()})
		}
	}
	return out, nil
}

// buildMessage makes a plain-text message of about size bytes (headers
// included) with 76-character body lines.
func buildMessage(from string, size, variant int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Load Sender <%s>\r\n", from)
	fmt.Fprintf(&b, "To: <%s>\r\n", rcptAddr)
	fmt.Fprintf(&b, "Subject: mxload message %d of %d bytes\r\n", variant, size)
	fmt.Fprintf(&b, "Date: %s\r\n", time.Now().UTC().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%d.%d@%s>\r\n", time.Now().UnixNano(), variant, strings.SplitN(from, "@", 2)[1])
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n")
	line := []byte("The quick brown fox jumps over the lazy dog; mxload body text 0123456789 ab\r\n")
	for b.Len()+len(line) <= size {
		b.Write(line)
	}
	if rest := size - b.Len(); rest > 2 {
		b.Write(bytes.Repeat([]byte("z"), rest-2))
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
