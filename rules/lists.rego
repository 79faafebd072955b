package mxguard

# METADATA
# title: Blocked network
# description: >-
#   The client IP is in data.mxguard.blocked_networks (CIDRs). Fires at every
#   stage, so the connection is refused at the first decision.
# custom:
#   code: blocked_network
reject contains {"code": "blocked_network", "msg": sprintf("client %s is in a blocked network", [printable(input.client.ip)])} if {
	some cidr in data.mxguard.blocked_networks
	input.client.ip != ""
	net.cidr_is_valid(cidr)
	net.cidr_contains(cidr, input.client.ip)
}

# METADATA
# title: Blocked sender
# description: >-
#   The envelope sender (from the mail stage) or the header From (data stage)
#   matches data.mxguard.blocked_senders (addresses, @domain or @.domain).
# custom:
#   code: blocked_sender
reject contains {"code": "blocked_sender", "msg": sprintf("sender %s is blocked", [printable(addr)])} if {
	data.mxguard.blocked_senders != []
	some addr in sender_addresses
	sender_listed(data.mxguard.blocked_senders, addr)
}

# METADATA
# title: Allowed sender
# description: >-
#   The sender is in data.mxguard.allowed_senders (plus the engine's allow
#   file) AND authenticated: the envelope sender with SPF pass, or the header
#   From with DMARC pass. An unauthenticated claim is never trusted, since
#   both addresses are chosen by the sender. Allowed senders skip the content
#   rules (attachments, line endings, SPF tag), never DMARC, blocks or limits.
allowed_sender if {
	data.mxguard.allowed_senders != []
	input.auth.spf.result == "pass"
	input.auth.spf.identity != "helo"
	input.envelope.mail_from != ""
	sender_listed(data.mxguard.allowed_senders, lower(input.envelope.mail_from))
}

allowed_sender if {
	data.mxguard.allowed_senders != []
	input.auth.dmarc.result == "pass"
	input.message.header_from != ""
	sender_listed(data.mxguard.allowed_senders, lower(input.message.header_from))
}

# METADATA
# title: Trusted forwarder
# description: >-
#   The client is a mailing list or forwarding service listed in
#   data.mxguard.trusted_forwarders: by IP (networks, CIDRs) or by
#   forward-confirmed PTR name (ptr_domains: the domain or a subdomain).
#   Forwarding breaks SPF and often DKIM, so their DMARC failures are tagged
#   rather than rejected or quarantined.
trusted_forwarder if client_in(data.mxguard.trusted_forwarders.networks)

trusted_forwarder if {
	input.client.ptr_result == "pass"
	ptr := lower(trim_suffix(input.client.ptr, "."))
	ptr != ""
	some d in data.mxguard.trusted_forwarders.ptr_domains
	domain_match(ptr, lower(trim_suffix(d, ".")))
}
