# METADATA
# title: mxguard shipped policy
# description: >-
#   The default policy of the gateway. Rules add reasons to the sets reject,
#   tempfail, quarantine and tag; the engine turns them into one decision per
#   stage. Reject and tempfail reasons may fire at any stage where their facts
#   exist; quarantine and tag reasons fire only at the data stage (early stages
#   act only on reject/tempfail). Conditions are written as
#   input.<field> == "<constant>" where possible so that OPA's rule index
#   skips non-matching rules without evaluating them.
package mxguard

# METADATA
# title: Printable
# description: >-
#   Makes a message-supplied string safe for a reason message: non-printable
#   and non-ASCII characters become "?" and the length is capped, because the
#   engine refuses decisions whose texts carry control characters.
printable(s) := substring(regex.replace(s, `[^ -~]`, "?"), 0, 80)

# METADATA
# title: Sender addresses
# description: The envelope sender and the header From, lower-cased, where known.
sender_addresses contains lower(input.envelope.mail_from) if input.envelope.mail_from != ""

sender_addresses contains lower(input.message.header_from) if input.message.header_from != ""

# METADATA
# title: Sender listed
# description: >-
#   addr (lower-cased) matches an entry of list: the whole address
#   (alice@example.org), its domain (@example.org, that domain only) or a
#   parent domain written @.example.org (the domain and all its subdomains).
#   Entries must be lower-case (test_sender_lists_lower_case); the keys of
#   addr are looked up, so no entry is transformed per message.
sender_listed(list, addr) if {
	count(list) > 0
	some key in sender_keys(addr)
	key in list
}

# METADATA
# title: Sender keys
# description: >-
#   The list entries that match addr: the address, @domain, and @.parent for
#   the domain and each parent domain with at least two labels.
sender_keys(addr) := array.concat([addr, concat("", ["@", domain])], parents) if {
	parts := split(addr, "@")
	domain := parts[count(parts) - 1]
	labels := split(domain, ".")
	parents := [concat("", ["@.", concat(".", array.slice(labels, i, count(labels)))]) |
		some i in numbers.range(0, count(labels) - 1)
		i < count(labels) - 1
	]
}

# METADATA
# title: Domain match
# description: name is d or a subdomain of d.
domain_match(name, d) if name == d

domain_match(name, d) if endswith(name, concat("", [".", d]))

# METADATA
# title: Client in networks
# description: The client IP is inside one of the CIDRs (invalid entries are ignored, not errors).
client_in(cidrs) if {
	input.client.ip != ""
	some cidr in cidrs
	net.cidr_is_valid(cidr)
	net.cidr_contains(cidr, input.client.ip)
}
