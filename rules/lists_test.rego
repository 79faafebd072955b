package mxguard_test

import data.mxguard

conn(ip) := {"stage": "connect", "client": {"ip": ip}, "envelope": {"mail_from": "", "rcpt_to": []}, "auth": {"dkim": []}}

test_blocked_network if {
	"blocked_network" in codes(mxguard.reject) with input as conn("203.0.113.9") with data.mxguard.blocked_networks as ["203.0.113.0/24"]
	"blocked_network" in codes(mxguard.reject) with input as conn("2001:db8::1") with data.mxguard.blocked_networks as ["2001:db8::/32"]
	count(mxguard.reject) == 0 with input as conn("198.51.100.1") with data.mxguard.blocked_networks as ["203.0.113.0/24"]
}

test_blocked_network_bad_entry_ignored if {
	"blocked_network" in codes(mxguard.reject) with input as conn("203.0.113.9") with data.mxguard.blocked_networks as ["not-a-cidr", "203.0.113.0/24"]
}

test_shipped_networks_valid if {
	every cidr in array.concat(data.mxguard.blocked_networks, data.mxguard.trusted_forwarders.networks) {
		net.cidr_is_valid(cidr)
	}
}

mail(from) := {"stage": "mail", "client": {"ip": "198.51.100.1"}, "envelope": {"mail_from": from}, "auth": {"dkim": []}}

test_blocked_sender_address if {
	"blocked_sender" in codes(mxguard.reject) with input as mail("Spam@Example.NET") with data.mxguard.blocked_senders as ["spam@example.net"]
	count(mxguard.reject) == 0 with input as mail("spam2@example.net") with data.mxguard.blocked_senders as ["spam@example.net"]
}

test_sender_keys if {
	mxguard.sender_keys("a@b.example.org") == ["a@b.example.org", "@b.example.org", "@.b.example.org", "@.example.org"]
	mxguard.sender_keys("a@localhost") == ["a@localhost", "@localhost"]
}

test_sender_lists_lower_case if {
	every list in [data.mxguard.blocked_senders, data.mxguard.allowed_senders, data.mxguard.trusted_forwarders.ptr_domains] {
		every e in list {
			e == lower(e)
		}
	}
}

test_blocked_sender_domain if {
	"blocked_sender" in codes(mxguard.reject) with input as mail("x@example.net") with data.mxguard.blocked_senders as ["@example.net"]
	count(mxguard.reject) == 0 with input as mail("x@notexample.net") with data.mxguard.blocked_senders as ["@example.net"]
	count(mxguard.reject) == 0 with input as mail("x@sub.example.net") with data.mxguard.blocked_senders as ["@example.net"]
}

test_blocked_sender_subdomains if {
	"blocked_sender" in codes(mxguard.reject) with input as mail("x@sub.example.net") with data.mxguard.blocked_senders as ["@.example.net"]
	"blocked_sender" in codes(mxguard.reject) with input as mail("x@example.net") with data.mxguard.blocked_senders as ["@.example.net"]
}

test_blocked_header_from if {
	inp := object.union(msg({"header_from": "boss@spoof.example"}), {})
	"blocked_sender" in codes(mxguard.reject) with input as inp with data.mxguard.blocked_senders as ["@spoof.example"]
}

test_allowed_sender_skips_content_rules if {
	inp := att({"filename": "tool.exe"})
	count(mxguard.quarantine) == 0 with input as inp with data.mxguard.allowed_senders as ["bob@example.com"]
}

test_allowed_sender_needs_authentication if {
	inp := object.union(att({"filename": "tool.exe"}), {"auth": {"spf": {"result": "softfail"}, "dmarc": {"result": "fail", "policy": "none"}}})
	"dangerous_attachment" in codes(mxguard.quarantine) with input as inp with data.mxguard.allowed_senders as ["bob@example.com"]
}

test_allowed_sender_does_not_skip_dmarc if {
	inp := object.union(dmarc_fail("reject"), {"auth": {"spf": {"result": "pass"}}})
	"dmarc_reject" in codes(mxguard.reject) with input as inp with data.mxguard.allowed_senders as ["@example.org"]
}

test_allowed_sender_by_dmarc_pass if {
	inp := object.union(att({"filename": "tool.exe"}), {"auth": {"spf": {"result": "softfail"}, "dmarc": {"result": "pass"}}})
	count(mxguard.quarantine) == 0 with input as inp with data.mxguard.allowed_senders as ["@example.com"]
}

test_allowed_sender_helo_spf_not_enough if {
	inp := object.union(att({"filename": "tool.exe"}), {"auth": {"spf": {"result": "pass", "identity": "helo"}, "dmarc": {"result": "none"}}})
	"dangerous_attachment" in codes(mxguard.quarantine) with input as inp with data.mxguard.allowed_senders as ["bob@example.com"]
}
