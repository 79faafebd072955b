package mxguard_test

import data.mxguard

msg(m) := {
	"stage": "data",
	"client": {"ip": "198.51.100.7"},
	"envelope": {"mail_from": "bob@example.com"},
	"message": object.union(
		{"header_from": "bob@example.com", "line_endings": {"bare_lf": false, "bare_cr": false, "nul": false, "normalized": false}, "attachments": []},
		m,
	),
	"auth": {"spf": {"result": "pass", "identity": "mailfrom", "domain": "example.com"}, "dkim": [], "dmarc": {"result": "pass", "policy": "reject"}},
}

test_clean_message_accepted if {
	inp := msg({})
	count(mxguard.reject) == 0 with input as inp
	count(mxguard.tempfail) == 0 with input as inp
	count(mxguard.quarantine) == 0 with input as inp
	count(mxguard.tag) == 0 with input as inp
}

test_from_missing if {
	"from_missing" in codes(mxguard.reject) with input as msg({"from_problem": "missing", "header_from": ""})
}

test_from_multiple if {
	"from_multiple" in codes(mxguard.reject) with input as msg({"from_problem": "multiple"})
	"from_multiple" in codes(mxguard.reject) with input as msg({"from_problem": "multiple_mailboxes"})
}

test_from_invalid if {
	"from_invalid" in codes(mxguard.reject) with input as msg({"from_problem": "invalid"})
}

test_bare_lf_normalised_tagged if {
	inp := msg({"line_endings": {"bare_lf": true, "bare_cr": false, "nul": false, "normalized": true}})
	some r in mxguard.tag with input as inp
	r.code == "bare_line_endings"
	r.msg == "bare line endings normalised: bare_lf"
}

test_bare_lf_not_normalised_not_tagged if {
	# Refused by the DATA validator before the policy; nothing to tag.
	inp := msg({"line_endings": {"bare_lf": true, "bare_cr": false, "nul": false, "normalized": false}})
	count(mxguard.tag) == 0 with input as inp
}

att(a) := msg({"attachments": [object.union({"filename": "", "content_type": "application/octet-stream", "sniffed_type": "", "size": 10, "sha256": ""}, a)]})

test_dangerous_attachment_by_extension if {
	every name in ["setup.exe", "INVOICE.PDF.EXE", "run.js", "a.ps1", "report.docm", "disk.iso", "x.vhdx", "trick.exe. ", "Budget.XLSM"] {
		"dangerous_attachment" in codes(mxguard.quarantine) with input as att({"filename": name})
	}
}

test_dangerous_attachment_by_declared_type if {
	"dangerous_attachment" in codes(mxguard.quarantine) with input as att({"filename": "", "content_type": "application/x-msdownload"})
	"dangerous_attachment" in codes(mxguard.quarantine) with input as att({"filename": "doc", "content_type": "Application/vnd.ms-excel.sheet.macroEnabled.12"})
}

test_dangerous_attachment_by_sniffed_type if {
	"dangerous_attachment" in codes(mxguard.quarantine) with input as att({"filename": "invoice.pdf", "content_type": "application/pdf", "sniffed_type": "application/x-dosexec"})
}

test_harmless_attachments_pass if {
	every name in ["invoice.pdf", "photo.jpeg", "notes.txt", "archive.zip", "report.docx", "exe", "noext"] {
		count(mxguard.quarantine) == 0 with input as att({"filename": name, "content_type": "application/pdf", "sniffed_type": "text/plain; charset=utf-8"})
	}
}

test_dangerous_attachment_msg_sanitised if {
	some r in mxguard.quarantine with input as att({"filename": "evil\r\nX-Injected: 1.exe"})
	r.msg == "dangerous attachment: evil??X-Injected: 1.exe"
}

test_dangerous_attachment_only_at_data if {
	inp := object.union(att({"filename": "setup.exe"}), {"stage": "mail"})
	count(mxguard.quarantine) == 0 with input as inp
}

test_dangerous_lists_lower_case if {
	every e in data.mxguard.dangerous_extensions {
		e == lower(e)
		startswith(e, ".")
		count(e) > 1
	}
	every t in data.mxguard.dangerous_content_types {
		t == lower(t)
	}
}

test_bare_cr_and_nul_tagged if {
	inp := msg({"line_endings": {"bare_lf": false, "bare_cr": true, "nul": true, "normalized": true}})
	some r in mxguard.tag with input as inp
	r.msg == "bare line endings normalised: bare_cr, nul"
}
