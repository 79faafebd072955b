package mxguard_test

import data.mxguard

limited(stage, facts) := {"stage": stage, "client": {"ip": "198.51.100.1"}, "envelope": {}, "auth": {"dkim": []}, "ratelimit": facts}

test_ratelimit_connect_421 if {
	some r in mxguard.tempfail with input as limited("connect", {"client_ip": {"allowed": false, "limit": 20, "remaining": 0, "retry_after_s": 2.3, "backend_error": false}})
	r.code == "ratelimit"
	r.reply == {"code": 421, "enhanced": "4.7.0", "text": "rate limit exceeded, try again in 3 seconds: ratelimit"}
	r.msg == "rate limit exceeded: client_ip"
}

test_ratelimit_later_451 if {
	facts := {
		"client_ip": {"allowed": true, "limit": 20, "remaining": 5, "retry_after_s": 0, "backend_error": false},
		"mail_from": {"allowed": false, "limit": 10, "remaining": 0, "retry_after_s": 0.2, "backend_error": false},
		"mail_from_domain": {"allowed": false, "limit": 10, "remaining": 0, "retry_after_s": 40, "backend_error": false},
	}
	some r in mxguard.tempfail with input as limited("mail", facts)
	r.reply.code == 451
	r.reply.text == "rate limit exceeded, try again in 40 seconds: ratelimit"
	r.msg == "rate limit exceeded: mail_from, mail_from_domain"
}

test_ratelimit_never_fits if {
	some r in mxguard.tempfail with input as limited("data", {"mail_from_bytes": {"allowed": false, "limit": 10, "remaining": 0, "retry_after_s": -1, "backend_error": false}})
	r.reply.text == "rate limit exceeded, try again later: ratelimit"
}

test_ratelimit_minimum_one_second if {
	some r in mxguard.tempfail with input as limited("rcpt", {"rcpt": {"allowed": false, "limit": 10, "remaining": 0, "retry_after_s": 0, "backend_error": false}})
	r.reply.text == "rate limit exceeded, try again in 1 seconds: ratelimit"
}

test_ratelimit_backend_error_alone_does_not_block if {
	count(mxguard.tempfail) == 0 with input as limited("connect", {"client_ip": {"allowed": true, "limit": 20, "remaining": 19, "retry_after_s": 0, "backend_error": true}})
}
