package mxguard

# METADATA
# title: Effective DMARC policy
# description: >-
#   The published policy, one step softer in testing mode (t=y, RFC 9989;
#   pct<100 in RFC 7489): reject is applied as quarantine, quarantine as none.
dmarc_policy := "quarantine" if {
	input.auth.dmarc.testing
	input.auth.dmarc.policy == "reject"
} else := "none" if {
	input.auth.dmarc.testing
} else := input.auth.dmarc.policy

# METADATA
# title: DMARC failure message
# description: Names the From domain and the published policy (and testing mode).
dmarc_fail_msg := sprintf("DMARC fail for %s (p=%s, testing)", [printable(input.auth.dmarc.domain), printable(input.auth.dmarc.policy)]) if {
	input.auth.dmarc.testing
} else := sprintf("DMARC fail for %s (p=%s)", [printable(input.auth.dmarc.domain), printable(input.auth.dmarc.policy)])

# METADATA
# title: DMARC verdict
# description: DMARC produced a verdict (pass or fail) for the From domain.
dmarc_verdict if input.auth.dmarc.result in {"pass", "fail"}

# METADATA
# title: DMARC failure with p=reject
# description: >-
#   The From domain publishes p=reject and the message fails DMARC (no aligned
#   SPF or DKIM pass): the domain owner asks receivers to refuse it. Not
#   applied to trusted forwarders (see dmarc_fail_forwarded).
# custom:
#   code: dmarc_reject
reject contains {"code": "dmarc_reject", "msg": dmarc_fail_msg} if {
	input.stage == "data"
	input.auth.dmarc.result == "fail"
	dmarc_policy == "reject"
	not trusted_forwarder
}

# METADATA
# title: DMARC failure with p=quarantine
# description: >-
#   The From domain publishes p=quarantine (or p=reject in testing mode) and
#   the message fails DMARC: it is held for review.
# custom:
#   code: dmarc_quarantine
quarantine contains {"code": "dmarc_quarantine", "msg": dmarc_fail_msg} if {
	input.stage == "data"
	input.auth.dmarc.result == "fail"
	dmarc_policy == "quarantine"
	not trusted_forwarder
}

# METADATA
# title: DMARC failure through a trusted forwarder
# description: >-
#   The message fails DMARC with p=reject or p=quarantine but came from a
#   trusted forwarder (mailing list, forwarding service): it is delivered and
#   tagged instead of being refused.
# custom:
#   code: dmarc_fail_forwarded
tag contains {"code": "dmarc_fail_forwarded", "msg": sprintf("DMARC fail for %s via trusted forwarder", [printable(input.auth.dmarc.domain)])} if {
	input.stage == "data"
	input.auth.dmarc.result == "fail"
	dmarc_policy in {"reject", "quarantine"}
	trusted_forwarder
}

# METADATA
# title: DMARC temporary error
# description: >-
#   DMARC could not be evaluated because of a temporary DNS failure: the
#   sender is asked to retry rather than the message being accepted unchecked.
# custom:
#   code: dmarc_temperror
tempfail contains {
	"code": "dmarc_temperror",
	"msg": sprintf("DMARC temporary error for %s", [printable(input.auth.dmarc.domain)]),
	# RFC 3463 4.4.3: directory server failure (DNS).
	"reply": {"code": 451, "enhanced": "4.4.3", "text": "temporary DNS failure checking DMARC, try again later: dmarc_temperror"},
} if {
	input.stage == "data"
	input.auth.dmarc.result == "temperror"
}

# METADATA
# title: SPF failure without a DMARC verdict
# description: >-
#   SPF fails (-all) for the envelope sender and DMARC gave no verdict (no
#   record, or an error), so the SPF result is the only authentication signal:
#   the message is tagged. With a DMARC verdict, DMARC decides.
# custom:
#   code: spf_fail
tag contains {"code": "spf_fail", "msg": sprintf("SPF fail for %s", [printable(input.auth.spf.domain)])} if {
	input.stage == "data"
	input.auth.spf.result == "fail"
	not dmarc_verdict
	not allowed_sender
}
