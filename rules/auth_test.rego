package mxguard_test

import data.mxguard

dmarc_fail(policy) := {
	"stage": "data",
	"client": {"ip": "192.0.2.10", "ptr": "mail.example.org", "ptr_result": "pass"},
	"envelope": {"mail_from": "alice@example.org", "mail_from_domain": "example.org"},
	"message": {"header_from": "alice@example.org", "header_from_domain": "example.org"},
	"auth": {
		"spf": {"result": "fail", "domain": "example.org", "identity": "mailfrom"},
		"dkim": [],
		"dmarc": {"result": "fail", "policy": policy, "domain": "example.org", "policy_domain": "example.org"},
	},
}

codes(set) := {r.code | some r in set}

test_dmarc_reject if {
	"dmarc_reject" in codes(mxguard.reject) with input as dmarc_fail("reject")
	not "spf_fail" in codes(mxguard.tag) with input as dmarc_fail("reject")
}

test_dmarc_reject_only_at_data if {
	inp := object.union(dmarc_fail("reject"), {"stage": "rcpt"})
	count(mxguard.reject) == 0 with input as inp
}

test_dmarc_quarantine if {
	"dmarc_quarantine" in codes(mxguard.quarantine) with input as dmarc_fail("quarantine")
	count(mxguard.reject) == 0 with input as dmarc_fail("quarantine")
}

test_dmarc_none_policy_no_action if {
	inp := dmarc_fail("none")
	count(mxguard.reject) == 0 with input as inp
	count(mxguard.quarantine) == 0 with input as inp
	count(mxguard.tag) == 0 with input as inp
}

test_dmarc_testing_softens if {
	inp := object.union(dmarc_fail("reject"), {"auth": {"dmarc": {"testing": true}}})
	count(mxguard.reject) == 0 with input as inp
	"dmarc_quarantine" in codes(mxguard.quarantine) with input as inp
	inq := object.union(dmarc_fail("quarantine"), {"auth": {"dmarc": {"testing": true}}})
	count(mxguard.quarantine) == 0 with input as inq
}

test_dmarc_pass_no_action if {
	inp := object.union(dmarc_fail("reject"), {"auth": {"dmarc": {"result": "pass"}}})
	count(mxguard.reject) == 0 with input as inp
	count(mxguard.tag) == 0 with input as inp
}

test_trusted_forwarder_by_network if {
	inp := dmarc_fail("reject")
	count(mxguard.reject) == 0 with input as inp with data.mxguard.trusted_forwarders.networks as ["192.0.2.0/24"]
	"dmarc_fail_forwarded" in codes(mxguard.tag) with input as inp with data.mxguard.trusted_forwarders.networks as ["192.0.2.0/24"]
}

test_trusted_forwarder_by_ptr if {
	inp := object.union(dmarc_fail("quarantine"), {"client": {"ptr": "out3.lists.example.net."}})
	count(mxguard.quarantine) == 0 with input as inp with data.mxguard.trusted_forwarders.ptr_domains as ["lists.example.net"]
	"dmarc_fail_forwarded" in codes(mxguard.tag) with input as inp with data.mxguard.trusted_forwarders.ptr_domains as ["lists.example.net"]
}

test_trusted_forwarder_ptr_needs_fcrdns if {
	inp := object.union(dmarc_fail("reject"), {"client": {"ptr": "out3.lists.example.net", "ptr_result": "fail"}})
	"dmarc_reject" in codes(mxguard.reject) with input as inp with data.mxguard.trusted_forwarders.ptr_domains as ["lists.example.net"]
}

test_trusted_forwarder_ptr_no_suffix_trick if {
	inp := object.union(dmarc_fail("reject"), {"client": {"ptr": "evillists.example.net"}})
	"dmarc_reject" in codes(mxguard.reject) with input as inp with data.mxguard.trusted_forwarders.ptr_domains as ["lists.example.net"]
}

test_dmarc_temperror if {
	inp := object.union(dmarc_fail("reject"), {"auth": {"dmarc": {"result": "temperror"}}})
	"dmarc_temperror" in codes(mxguard.tempfail) with input as inp
	count(mxguard.reject) == 0 with input as inp
}

test_spf_fail_without_dmarc if {
	inp := object.union(dmarc_fail("none"), {"auth": {"dmarc": {"result": "none", "policy": ""}}})
	"spf_fail" in codes(mxguard.tag) with input as inp
}

test_spf_fail_without_dmarc_record_at_all if {
	inp := json.remove(dmarc_fail("none"), ["auth/dmarc"])
	"spf_fail" in codes(mxguard.tag) with input as inp
}

test_spf_fail_with_dmarc_verdict_not_tagged if {
	inp := object.union(dmarc_fail("none"), {"auth": {"dmarc": {"result": "pass"}}})
	not "spf_fail" in codes(mxguard.tag) with input as inp
}

test_spf_softfail_not_tagged if {
	inp := object.union(dmarc_fail("none"), {"auth": {"spf": {"result": "softfail"}, "dmarc": {"result": "none"}}})
	count(mxguard.tag) == 0 with input as inp
}

test_trusted_forwarder_ptr_exact_domain if {
	inp := object.union(dmarc_fail("reject"), {"client": {"ptr": "lists.example.net"}})
	count(mxguard.reject) == 0 with input as inp with data.mxguard.trusted_forwarders.ptr_domains as ["lists.example.net"]
}
