package mxguard

# METADATA
# title: Rate limit exceeded
# description: >-
#   A rate-limit fact (input.ratelimit.<dimension>) says allowed=false: the
#   client, sender or recipient has sent too much lately. The sender is asked
#   to retry later: 421 4.7.0 at connect (the gateway closes the connection),
#   451 4.7.0 at later stages, with the wait in seconds when known. A fact
#   with backend_error only (Redis trouble, local fallback) never blocks.
# custom:
#   code: ratelimit
tempfail contains {
	"code": "ratelimit",
	"msg": sprintf("rate limit exceeded: %s", [concat(", ", sort(ratelimited))]),
	"reply": {"code": ratelimit_reply_code, "enhanced": "4.7.0", "text": ratelimit_text},
} if {
	count(ratelimited) > 0
}

# METADATA
# title: Rate-limited dimensions
# description: >-
#   Names of the dimensions whose fact says allowed=false. The facts are read
#   field by field (input.ratelimit[name].allowed, not a whole fact bound to a
#   variable): the engine then knows these are the only fields that matter
#   and can reuse the decision for the next message with the same ones.
ratelimited contains printable(name) if {
	input.ratelimit[name].allowed == false
}

# METADATA
# title: Rate-limit reply code
# description: 421 at connect (RFC 5321 4.2.2 closes the channel), 451 later.
ratelimit_reply_code := 421 if input.stage == "connect"
else := 451

# METADATA
# title: Rate-limit retry hint
# description: Seconds until the longest exceeded limit fits again (rounded up, at least 1).
ratelimit_retry := max([1, ceil(max(waits))]) if {
	waits := [wait |
		input.ratelimit[name].allowed == false
		wait := input.ratelimit[name].retry_after_s
		wait >= 0
	]
	count(waits) > 0
}

# METADATA
# title: Rate-limit reply text
# description: Names the reason code and, when known, the wait.
ratelimit_text := sprintf("rate limit exceeded, try again in %v seconds: ratelimit", [wait]) if {
	wait := ratelimit_retry
} else := "rate limit exceeded, try again later: ratelimit"
