package mxguard

# METADATA
# title: Missing From
# description: The message has no From header field (RFC 5322 3.6 requires exactly one).
# custom:
#   code: from_missing
reject contains {"code": "from_missing", "msg": "message has no From header"} if {
	input.stage == "data"
	input.message.from_problem == "missing"
}

# METADATA
# title: Multiple From
# description: >-
#   The message has several From fields or several mailboxes in From
#   (RFC 5322 3.6). DMARC cannot name one author domain, a known spoofing trick.
# custom:
#   code: from_multiple
reject contains {"code": "from_multiple", "msg": sprintf("message has %s From", [replace(input.message.from_problem, "_", " ")])} if {
	input.stage == "data"
	input.message.from_problem in {"multiple", "multiple_mailboxes"}
}

# METADATA
# title: Invalid From
# description: The From field cannot be parsed as a mailbox (RFC 5322 3.4), so its domain cannot be authenticated.
# custom:
#   code: from_invalid
reject contains {"code": "from_invalid", "msg": "message From header is not a valid mailbox"} if {
	input.stage == "data"
	input.message.from_problem == "invalid"
}

# METADATA
# title: Bare line endings normalised
# description: >-
#   DATA contained bare LF, bare CR or NUL (RFC 5321 2.3.8 forbids them; they
#   enable SMTP smuggling) and the gateway normalised them (data.line_endings:
#   normalize). The message is delivered and tagged. Without normalisation
#   such a message is refused before the policy runs.
# custom:
#   code: bare_line_endings
tag contains {"code": "bare_line_endings", "msg": sprintf("bare line endings normalised: %s", [concat(", ", bare_line_endings_seen)])} if {
	input.stage == "data"
	input.message.line_endings.normalized
	count(bare_line_endings_seen) > 0
	not allowed_sender
}

# METADATA
# title: Bare line endings seen
# description: Which of bare_lf, bare_cr, nul the DATA validator reported.
bare_line_endings_seen contains "bare_lf" if input.message.line_endings.bare_lf

bare_line_endings_seen contains "bare_cr" if input.message.line_endings.bare_cr

bare_line_endings_seen contains "nul" if input.message.line_endings.nul

# METADATA
# title: Dangerous attachment
# description: >-
#   An attachment is an executable, a script, a macro-enabled Office document
#   or a disk image, judged by its filename extension
#   (data.mxguard.dangerous_extensions) or by its declared or sniffed content
#   type (data.mxguard.dangerous_content_types). The message is held for
#   review.
# custom:
#   code: dangerous_attachment
quarantine contains {"code": "dangerous_attachment", "msg": sprintf("dangerous attachment: %s", [concat(", ", sort(dangerous_attachments))])} if {
	input.stage == "data"
	count(dangerous_attachments) > 0
	not allowed_sender
}

# METADATA
# title: Dangerous attachments
# description: >-
#   Printable names (or types) of the attachments whose filename ends with
#   an extension in data.mxguard.dangerous_extensions (".exe"), after
#   dropping the trailing dots
#   and spaces Windows ignores ("invoice.pdf.exe. " is exe), or whose
#   declared or sniffed content type is in data.mxguard.dangerous_content_types.
#   The lists are lower-case (test_dangerous_lists_lower_case) and the
#   declared type arrives lower-cased without parameters, so each check is
#   one built-in call: no function calls or set building per message.
dangerous_attachments contains printable(attachment_label(a)) if {
	some a in input.message.attachments
	strings.any_suffix_match(lower(trim_right(a.filename, ". ")), data.mxguard.dangerous_extensions)
}

dangerous_attachments contains printable(attachment_label(a)) if {
	some a in input.message.attachments
	lower(a.content_type) in data.mxguard.dangerous_content_types
}

dangerous_attachments contains printable(attachment_label(a)) if {
	some a in input.message.attachments
	a.sniffed_type in data.mxguard.dangerous_content_types
}

# METADATA
# title: Attachment label
# description: The attachment's filename, or its content type when it has none.
attachment_label(a) := a.filename if a.filename != ""
else := a.content_type
