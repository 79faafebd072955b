package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/redis/go-redis/v9"

	"github.com/mxguard/mxguard/config"
	"github.com/mxguard/mxguard/internal/testenv"
	"github.com/mxguard/mxguard/quarantine"
)

// qEnv is a config file, the store it names (opened directly, to seed it)
// and the recording downstream its one domain relays to.
type qEnv struct {
	dir     string
	cfgPath string
	store   quarantine.Admin
	down    *testenv.Downstream
	redis   *testenv.Redis
	open    func(now func() time.Time) quarantine.Admin
}

func newQEnv(t *testing.T, backend string) *qEnv {
	t.Helper()
	e := &qEnv{dir: t.TempDir(), down: testenv.StartDownstream(t, testenv.DownstreamOptions{})}
	rules := filepath.Join(e.dir, "rules")
	os.MkdirAll(rules, 0o755)
	qdir := filepath.Join(e.dir, "q")
	qcfg := fmt.Sprintf("{backend: dir, dir: %q, retention: 720h}", qdir)
	e.open = func(now func() time.Time) quarantine.Admin {
		s, err := quarantine.OpenDir(qdir, quarantine.DirOptions{Now: now})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	if backend == "redis" {
		e.redis = testenv.StartRedis(t)
		qcfg = fmt.Sprintf("{backend: redis, redis: {addrs: [%q], timeout: 500ms}, retention: 720h}", e.redis.Addr)
		e.open = func(now func() time.Time) quarantine.Admin {
			c := redis.NewClient(&redis.Options{Addr: e.redis.Addr})
			t.Cleanup(func() { c.Close() })
			s, err := quarantine.NewRedis(c, quarantine.RedisOptions{Retention: 720 * time.Hour, Now: now})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	cfg := fmt.Sprintf(`hostname: mx.test
listen: ["127.0.0.1:2525"]
domains:
  corp.example: {downstream: [%q], tls: none}
policy: {rules: %q}
quarantine: %s
`, e.down.Addr(), rules, qcfg)
	e.cfgPath = filepath.Join(e.dir, "mxguard.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	e.store = e.open(time.Now)
	return e
}

func (e *qEnv) put(t *testing.T, s quarantine.Store, m quarantine.Meta, msg string) string {
	t.Helper()
	id, err := s.Put(context.Background(), m, strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// run calls runQuarantine with the env's config and returns exit code,
// stdout and stderr.
func (e *qEnv) run(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := runQuarantine(append(args, "--config", e.cfgPath), &out, &errb, strings.NewReader(""))
	return code, out.String(), errb.String()
}

func qMeta(i int, from, subject, reason string) quarantine.Meta {
	return quarantine.Meta{
		ClientIP: "192.0.2.10", Helo: "mail.example.org", TLS: "TLS 1.3",
		MailFrom: from, Rcpts: []string{"bob@corp.example", "carol@corp.example"},
		HeaderFrom: "Alice <" + from + ">", Subject: subject, MessageID: fmt.Sprintf("<m%d@example.org>", i),
		Decision: quarantine.Decision{Action: "quarantine", PolicyRevision: "abc123", DecisionID: fmt.Sprintf("dec-%d", i),
			Reasons: []quarantine.Reason{{Code: reason, Msg: "DMARC policy quarantine", Title: "DMARC failure with p=quarantine",
				Description: "The From domain publishes p=quarantine and the message failed DMARC."}}},
		Auth:  json.RawMessage(`{"dmarc":{"result":"fail","policy":"quarantine"}}`),
		Route: "corp.example",
	}
}

const qMsg = "Authentication-Results: mx.test; dmarc=fail header.from=example.org\r\n" +
	"From: Alice <alice@example.org>\r\nTo: bob@corp.example\r\nSubject: Q4 invoice\r\n\r\nPlease pay.\r\n"

func TestQuarantineListAndShow(t *testing.T) {
	e := newQEnv(t, "dir")
	clock := time.Now().Add(-3 * time.Hour)
	s := e.open(func() time.Time { return clock })
	var idsNewestFirst []string
	for i, sub := range []string{"first", "second \x1b[31mred\x1b[0m", "third"} {
		reason := "dmarc_quarantine"
		if i == 1 {
			reason = "dangerous_attachment"
		}
		idsNewestFirst = append([]string{e.put(t, s, qMeta(i, fmt.Sprintf("alice%d@example.org", i), sub, reason), qMsg)}, idsNewestFirst...)
		clock = clock.Add(time.Hour)
	}

	code, out, errOut := e.run("list")
	if code != 0 {
		t.Fatalf("list: %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[0], "SUBJECT") {
		t.Fatalf("list output:\n%s", out)
	}
	col := strings.Index(lines[0], "STATUS")
	for i, l := range lines[1:] {
		if !strings.HasPrefix(l, idsNewestFirst[i]) || l[col:col+4] != "held" {
			t.Fatalf("row %d not aligned or not newest first:\n%s", i, out)
		}
	}
	if strings.Contains(out, "\x1b") || !strings.Contains(out, `second \x1b[31mred`) {
		t.Fatalf("control characters not escaped:\n%q", out)
	}

	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--reason", "dangerous_attachment"}, idsNewestFirst[1:2]},
		{[]string{"--from", "alice2@"}, idsNewestFirst[:1]},
		{[]string{"--status", "released"}, nil},
		{[]string{"--since", "90m"}, idsNewestFirst[:1]},
		{[]string{"--domain", "corp.example", "--limit", "2"}, idsNewestFirst[:2]},
		{[]string{"--limit", "2", "--page", "2"}, idsNewestFirst[2:]},
		{[]string{"--rcpt", "carol"}, idsNewestFirst},
	} {
		code, out, errOut := e.run(append([]string{"list", "--json"}, tc.args...)...)
		if code != 0 {
			t.Fatalf("list %v: %d %s", tc.args, code, errOut)
		}
		var res struct {
			Items []quarantine.Meta
			Next  string
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil {
			t.Fatalf("list --json %v: %v\n%s", tc.args, err, out)
		}
		var got []string
		for _, m := range res.Items {
			got = append(got, m.ID)
		}
		if strings.Join(got, " ") != strings.Join(tc.want, " ") {
			t.Errorf("list %v = %v, want %v", tc.args, got, tc.want)
		}
	}
	// The table says how to get the next page.
	if _, _, errOut := e.run("list", "--limit", "1"); !strings.Contains(errOut, "--cursor "+idsNewestFirst[0]) {
		t.Fatalf("paging hint missing: %q", errOut)
	}
	code, out, _ = e.run("list", "--limit", "1", "--cursor", idsNewestFirst[0])
	if code != 0 || !strings.Contains(out, idsNewestFirst[1]) || strings.Contains(out, idsNewestFirst[0]) {
		t.Fatalf("list --cursor: %s", out)
	}
	for _, bad := range [][]string{{"--since", "yesterday"}, {"--limit", "0"}, {"--status", "bogus"}, {"extra"}} {
		if code, _, errOut := e.run(append([]string{"list"}, bad...)...); code == 0 || errOut == "" {
			t.Errorf("list %v: exit %d, stderr %q", bad, code, errOut)
		}
	}

	id := idsNewestFirst[1]
	code, out, errOut = e.run("show", id)
	if code != 0 {
		t.Fatalf("show: %d %s", code, errOut)
	}
	for _, want := range []string{"ID:          " + id, "Status:      held", "Client:      192.0.2.10 (helo mail.example.org, TLS 1.3)",
		"To:          bob@corp.example, carol@corp.example", `second \x1b[31mred\x1b[0m`,
		"Verdict:     quarantine (decision dec-1, policy revision abc123)", "  - dangerous_attachment: DMARC policy quarantine",
		"      DMARC failure with p=quarantine", `"result": "fail"`, "Headers:", "  Authentication-Results: mx.test; dmarc=fail",
		"held            by mxguard"} {
		if !strings.Contains(out, want) {
			t.Errorf("show output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Please pay") || strings.Contains(out, "\x1b") || strings.Contains(out, "\r") {
		t.Errorf("show printed the body or raw control characters:\n%q", out)
	}
	// --raw to a pipe is the exact message; flags may follow the id.
	if code, out, _ := e.run("show", id, "--raw"); code != 0 || out != qMsg {
		t.Fatalf("show --raw = %d %q", code, out)
	}
	if code, out, _ := e.run("show", "--json", id); code != 0 || !strings.Contains(out, `"decision_id": "dec-1"`) {
		t.Fatalf("show --json = %d %s", code, out)
	}
}

func TestQuarantineBadInput(t *testing.T) {
	e := newQEnv(t, "dir")
	id := e.put(t, e.store, qMeta(1, "alice@example.org", "x", "r"), qMsg)
	// Damage a second item's metadata.
	bad := e.put(t, e.store, qMeta(2, "alice@example.org", "y", "r"), qMsg)
	os.WriteFile(filepath.Join(e.dir, "q", bad+".json"), []byte("{garbage"), 0o600)
	unknown := "q-00000000000000000000000000" // well-formed, never stored

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"show", unknown}, 1, "no such item"},
		{[]string{"show", "../../etc/passwd"}, 1, "malformed id"},
		{[]string{"show", strings.Repeat("q", 10_000)}, 1, "malformed id"},
		{[]string{"show", bad}, 1, "damaged metadata"},
		{[]string{"release", bad}, 1, "damaged metadata"},
		{[]string{"release", unknown}, 1, "no such item"},
		{[]string{"release", id, "--by", "evil\r\nX-Injected: 1"}, 2, "not allowed"},
		{[]string{"delete", "/etc/passwd"}, 1, "malformed id"},
		{[]string{"show"}, 2, "exactly one ID"},
		{[]string{"release"}, 2, "at least one ID"},
		{[]string{"frobnicate"}, 2, "unknown command"},
	} {
		code, out, errOut := e.run(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want %q), stdout %q", tc.args[:1], code, tc.code, errOut, tc.want, out)
		}
		if len(errOut) > 2000 {
			t.Errorf("%v: %d bytes of error output", tc.args[:1], len(errOut))
		}
	}
	// A damaged item is listed as damaged; the listing still works.
	code, out, _ := e.run("list")
	if code != 0 || !strings.Contains(out, bad) || !strings.Contains(out, "damaged") || !strings.Contains(out, id) {
		t.Fatalf("list with a damaged item: %d\n%s", code, out)
	}
	// A missing config and an unreachable store are clear failures.
	var errb bytes.Buffer
	if code := runQuarantine([]string{"list", "--config", filepath.Join(e.dir, "nope.yaml")}, io.Discard, &errb, nil); code != 1 || !strings.Contains(errb.String(), "nope.yaml") {
		t.Fatalf("missing config: %d %q", code, errb.String())
	}
	if e.down.Delivered() != 0 {
		t.Fatal("bad input caused a delivery")
	}
}

func TestQuarantineUnreachableRedis(t *testing.T) {
	e := newQEnv(t, "redis")
	e.redis.Stop()
	code, _, errOut := e.run("list")
	if code != 1 || !strings.Contains(errOut, "unreachable") || !strings.Contains(errOut, e.redis.Addr) {
		t.Fatalf("list with Redis down: %d %q", code, errOut)
	}
}

func TestQuarantineRelease(t *testing.T) {
	for _, backend := range []string{"dir", "redis"} {
		t.Run(backend, func(t *testing.T) {
			e := newQEnv(t, backend)
			id := e.put(t, e.store, qMeta(1, "alice@example.org", "invoice", "dmarc_quarantine"), qMsg)
			code, out, errOut := e.run("release", id, "--by", "sec-team", "--allow-sender")
			if code != 0 || !strings.Contains(out, "released "+id+" to 2 recipient(s)") {
				t.Fatalf("release: %d %q %q", code, out, errOut)
			}
			msgs := e.down.WaitMessages(t, 1, 5*time.Second)
			got := msgs[0]
			if got.From != "alice@example.org" || strings.Join(got.To, ",") != "bob@corp.example,carol@corp.example" {
				t.Fatalf("delivered envelope %s -> %v", got.From, got.To)
			}
			if !bytes.HasPrefix(got.Data, []byte("X-MXGuard-Released: by=sec-team; at=")) || !bytes.HasSuffix(got.Data, []byte(qMsg)) ||
				!bytes.Contains(got.Data, []byte("; id="+id+"\r\nAuthentication-Results: mx.test;")) {
				t.Fatalf("delivered message:\n%s", got.Data)
			}
			// The allow list got the sender, as a JSON list.
			allow := filepath.Join(e.dir, "rules", "data", "allowed_senders.json")
			var list []string
			if b, err := os.ReadFile(allow); err != nil || json.Unmarshal(b, &list) != nil || strings.Join(list, ",") != "alice@example.org" {
				t.Fatalf("allow file: %q %v", list, err)
			}
			// Released once only, whoever asks again.
			code, _, errOut = e.run("release", id)
			if code != 1 || !strings.Contains(errOut, "not held") {
				t.Fatalf("second release: %d %q", code, errOut)
			}
			m, _ := e.store.Get(context.Background(), id)
			if m.Status != quarantine.StatusReleased || m.History[len(m.History)-1].By != "sec-team" {
				t.Fatalf("after release: %s %+v", m.Status, m.History)
			}
			// A second sender is appended; an existing one is not duplicated.
			id2 := e.put(t, e.store, qMeta(2, "ALICE@example.org", "again", "dmarc_quarantine"), qMsg)
			id3 := e.put(t, e.store, qMeta(3, "", "null sender", "dmarc_quarantine"), qMsg)
			m3, _ := e.store.Get(context.Background(), id3)
			if m3.HeaderFrom != "Alice <>" {
				t.Logf("header from %q", m3.HeaderFrom)
			}
			code, out, errOut = e.run("release", "--allow-sender", id2)
			if code != 0 || !strings.Contains(out, "already an allowed sender") {
				t.Fatalf("release --allow-sender (dup): %d %q %q", code, out, errOut)
			}
			if got := e.down.WaitMessages(t, 2, 5*time.Second); len(got) != 2 {
				t.Fatalf("%d deliveries", len(got))
			}
			code, out, errOut = e.run("delete", id3, "--by", "sec-team")
			if code != 0 || !strings.Contains(out, "deleted "+id3) {
				t.Fatalf("delete: %d %q %q", code, out, errOut)
			}
			if code, _, errOut := e.run("release", id3); code != 1 || !strings.Contains(errOut, "deleted") {
				t.Fatalf("release of deleted: %d %q", code, errOut)
			}
			time.Sleep(100 * time.Millisecond)
			if n := e.down.Delivered(); n != 2 {
				t.Fatalf("downstream got %d messages, want 2", n)
			}
		})
	}
}

// Two `mxguard quarantine release` processes at once deliver once.
func TestQuarantineReleaseTwoProcesses(t *testing.T) {
	if os.Getenv("MXG_QCHILD") != "" {
		return
	}
	for _, backend := range []string{"dir", "redis"} {
		t.Run(backend, func(t *testing.T) {
			e := newQEnv(t, backend)
			var ids []string
			for i := 0; i < 3; i++ {
				ids = append(ids, e.put(t, e.store, qMeta(i, "alice@example.org", "race", "dmarc_quarantine"), qMsg))
			}
			var wg sync.WaitGroup
			codes := make([]int, 2)
			outs := make([]string, 2)
			for p := range 2 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					cmd := exec.Command(os.Args[0], "-test.run=^TestQuarantineChild$", "-test.count=1")
					args, _ := json.Marshal(append(append([]string{"release"}, ids...), "--by", fmt.Sprintf("proc%d", p), "--config", e.cfgPath))
					cmd.Env = append(os.Environ(), "MXG_QCHILD="+string(args))
					out, _ := cmd.CombinedOutput()
					codes[p] = cmd.ProcessState.ExitCode()
					outs[p] = string(out)
				}()
			}
			wg.Wait()
			time.Sleep(200 * time.Millisecond)
			if n := e.down.Delivered(); n != len(ids) {
				t.Fatalf("downstream got %d messages for %d items\n%s\n%s", n, len(ids), outs[0], outs[1])
			}
			released := strings.Count(outs[0]+outs[1], "released q-")
			notHeld := strings.Count(outs[0]+outs[1], "not held")
			if released != len(ids) || notHeld != len(ids) {
				t.Fatalf("released %d, refused %d:\n%s\n%s", released, notHeld, outs[0], outs[1])
			}
		})
	}
}

// TestQuarantineChild runs runQuarantine in a child process for
// TestQuarantineReleaseTwoProcesses; alone it does nothing.
func TestQuarantineChild(t *testing.T) {
	raw := os.Getenv("MXG_QCHILD")
	if raw == "" {
		return
	}
	var args []string
	json.Unmarshal([]byte(raw), &args)
	os.Exit(runQuarantine(args, os.Stdout, os.Stdout, nil))
}

func TestQuarantinePurgeAndStats(t *testing.T) {
	e := newQEnv(t, "dir")
	old := e.open(func() time.Time { return time.Now().Add(-40 * 24 * time.Hour) })
	oldID := e.put(t, old, qMeta(1, "a@example.org", "old", "dmarc_quarantine"), qMsg)
	e.put(t, e.store, qMeta(2, "b@example.org", "new", "dmarc_quarantine"), qMsg)
	e.put(t, e.store, qMeta(3, "c@example.org", "new", "dangerous_attachment"), qMsg)

	code, out, errOut := e.run("stats", "--json")
	var st qStats
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
		t.Fatalf("stats: %d %q %q", code, out, errOut)
	}
	if st.Total != 3 || st.Status["held"] != 3 || st.Reason["dmarc_quarantine"] != 2 || st.Reason["dangerous_attachment"] != 1 || len(st.Day) != 2 {
		t.Fatalf("stats = %+v", st)
	}
	code, out, _ = e.run("stats")
	if code != 0 || !strings.Contains(out, "3 item(s)") || !strings.Contains(out, "dmarc_quarantine") || !strings.Contains(out, "DAY (UTC)") {
		t.Fatalf("stats table:\n%s", out)
	}

	code, out, errOut = e.run("purge")
	if code != 0 || !strings.Contains(out, "purged 1 item(s) older than 720h0m0s") {
		t.Fatalf("purge: %d %q %q", code, out, errOut)
	}
	if _, err := e.store.Get(context.Background(), oldID); err == nil {
		t.Fatal("old item survived purge")
	}
	if code, out, _ := e.run("purge", "--older-than", "1d"); code != 0 || !strings.Contains(out, "purged 0") {
		t.Fatalf("purge --older-than 1d: %d %q", code, out)
	}
	if code, _, _ := e.run("purge", "--older-than", "soon"); code != 2 {
		t.Fatalf("purge --older-than soon: exit %d", code)
	}
}

func TestQEscape(t *testing.T) {
	for in, want := range map[string]string{
		"plain ünïcödé":      "plain ünïcödé",
		"a\x1b[2Jb":          `a\x1b[2Jb`,
		"bell\a":             `bell\x07`,
		"c1\u009b31m":        `c1\u009b31m`,
		"bidi \u202egnp.exe": `bidi \u202egnp.exe`,
		"bad \xff utf8":      `bad \xff utf8`,
		"tab\tnl\n":          `tab\x09nl\x0a`,
		"del\x7f":            `del\x7f`,
	} {
		if got := qEscape(in, false); got != want {
			t.Errorf("qEscape(%q) = %q, want %q", in, got, want)
		}
	}
	if got := qEscape("a\tb\nc\r", true); got != "a\tb\nc\\x0d" {
		t.Errorf("multiline: %q", got)
	}
}

// ---- review ----

// qDrive feeds keys to the model and runs the commands they return, as the
// bubbletea runtime would, synchronously.
func qDrive(t *testing.T, m *reviewModel, keys ...string) (quit bool) {
	t.Helper()
	var run func(cmd tea.Cmd) bool
	run = func(cmd tea.Cmd) bool {
		if cmd == nil {
			return false
		}
		msg := cmd()
		switch msg := msg.(type) {
		case tea.QuitMsg:
			return true
		case tea.BatchMsg:
			for _, c := range msg {
				if run(c) {
					return true
				}
			}
			return false
		}
		_, next := m.Update(msg)
		return run(next)
	}
	for _, k := range keys {
		var km tea.KeyMsg
		switch k {
		case "enter":
			km = tea.KeyMsg{Type: tea.KeyEnter}
		case "ctrl+c":
			km = tea.KeyMsg{Type: tea.KeyCtrlC}
		default:
			km = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
		}
		_, cmd := m.Update(km)
		if run(cmd) {
			return true
		}
	}
	return false
}

func TestReviewModel(t *testing.T) {
	e := newQEnv(t, "dir")
	var ids []string
	for i := 0; i < 4; i++ {
		ids = append(ids, e.put(t, e.store, qMeta(i, fmt.Sprintf("s%d@example.org", i), fmt.Sprintf("subject %d", i), "dmarc_quarantine"), qMsg))
		time.Sleep(2 * time.Millisecond)
	}
	rl, err := newRelay(qMustLoad(t, e.cfgPath))
	if err != nil {
		t.Fatal(err)
	}
	items, err := loadReviewItems(context.Background(), e.store, quarantine.StatusHeld)
	if err != nil || len(items) != 4 || items[0].ID != ids[3] {
		t.Fatalf("items %v %v", len(items), err)
	}
	stale := append([]quarantine.Meta(nil), items...)
	m := newReviewModel(context.Background(), e.store, rl, "reviewer", items)
	m.Update(tea.WindowSizeMsg{Width: 100, Height: 10})

	view := m.View()
	if !strings.Contains(view, "item 1 of 4") || !strings.Contains(view, "subject 3") || !strings.Contains(view, "[r] release") {
		t.Fatalf("first view:\n%s", view)
	}
	// Full message, scroll, back.
	qDrive(t, m, "v")
	if v := m.View(); !strings.Contains(v, "Please pay.") || !strings.Contains(v, "Authentication-Results") {
		t.Fatalf("message view:\n%s", v)
	}
	qDrive(t, m, "j", "k", "v")
	if m.mode != modeSummary {
		t.Fatal("v did not return to the summary")
	}
	// Release needs confirmation; "n" cancels.
	qDrive(t, m, "r")
	if v := m.View(); !strings.Contains(v, "Release "+ids[3]+" to 2 recipient(s)? [y/N]") {
		t.Fatalf("confirm view:\n%s", v)
	}
	qDrive(t, m, "n")
	if e.down.Delivered() != 0 || m.i != 0 {
		t.Fatal("cancelled release delivered or moved on")
	}
	// Release item 1, skip item 2, delete item 3.
	qDrive(t, m, "r", "y")
	if m.i != 1 || m.released != 1 || !strings.Contains(m.status, "released "+ids[3]) {
		t.Fatalf("after release: i=%d released=%d status=%q", m.i, m.released, m.status)
	}
	qDrive(t, m, "s", "d", "y")
	if m.deleted != 1 || m.skipped != 1 || m.i != 3 {
		t.Fatalf("after skip+delete: %+v", m)
	}
	// Going back to a released item: it cannot be released again.
	qDrive(t, m, "p", "p", "p", "r")
	if !strings.Contains(m.status, "cannot release: item is released") {
		t.Fatalf("status %q", m.status)
	}
	// Past the last item the review ends.
	if !qDrive(t, m, "s", "s", "s", "s") {
		t.Fatal("review did not end after the last item")
	}
	if e.down.Delivered() != 1 {
		t.Fatalf("%d deliveries", e.down.Delivered())
	}
	ctx := context.Background()
	for id, want := range map[string]string{ids[3]: "released", ids[2]: "held", ids[1]: "deleted", ids[0]: "held"} {
		if m, _ := e.store.Get(ctx, id); m.Status != want {
			t.Errorf("%s: %s, want %s", id, m.Status, want)
		}
	}
	// A release racing another reviewer reports the error and stays.
	m2 := newReviewModel(ctx, e.store, rl, "other", stale)
	qDrive(t, m2, "r", "y")
	if m2.i != 0 || !strings.Contains(m2.status, "not held") {
		t.Fatalf("stale release: i=%d status %q", m2.i, m2.status)
	}
	if qDrive(t, m2, "q") != true {
		t.Fatal("q did not quit")
	}
}

func qMustLoad(t *testing.T, path string) *config.Config {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// The whole command through a real bubbletea program, with keys written to
// its input pipe.
func TestReviewCommandHeadless(t *testing.T) {
	e := newQEnv(t, "dir")
	first := e.put(t, e.store, qMeta(1, "a@example.org", "one", "dmarc_quarantine"), qMsg)
	time.Sleep(2 * time.Millisecond)
	second := e.put(t, e.store, qMeta(2, "b@example.org", "two", "dmarc_quarantine"), qMsg)

	pr, pw := io.Pipe()
	var out qLockedBuffer
	done := make(chan int, 1)
	go func() {
		done <- runQuarantine([]string{"review", "--by", "headless", "--config", e.cfgPath}, &out, &out, pr)
	}()
	// Release the newest (second) item, then wait until the store says so
	// before quitting, since keys typed while busy are refused.
	io.WriteString(pw, "r")
	io.WriteString(pw, "y")
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if m, _ := e.store.Get(context.Background(), second); m.Status == quarantine.StatusReleased {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	io.WriteString(pw, "q")
	var code int
	select {
	case code = <-done:
	case <-time.After(10 * time.Second):
		pw.Close()
		t.Fatal("review did not quit")
	}
	pw.Close()
	if code != 0 {
		t.Fatalf("review exit %d:\n%s", code, out.String())
	}
	if !strings.Contains(out.String(), "1 released, 0 deleted, 0 skipped") || !strings.Contains(out.String(), "released "+second) {
		t.Fatalf("review output:\n%s", out.String())
	}
	if m, _ := e.store.Get(context.Background(), first); m.Status != quarantine.StatusHeld {
		t.Fatalf("first item %s", m.Status)
	}
	if e.down.Delivered() != 1 {
		t.Fatalf("%d deliveries", e.down.Delivered())
	}
}

type qLockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *qLockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *qLockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestQuarantineReleaseForce(t *testing.T) {
	e := newQEnv(t, "dir")
	id := e.put(t, e.store, qMeta(1, "alice@example.org", "stuck", "dmarc_quarantine"), qMsg)
	claim := func(at time.Time) {
		_, err := e.store.Update(context.Background(), id, func(m *quarantine.Meta) error {
			m.Status = quarantine.StatusReleasing
			m.History = append(m.History[:1], quarantine.Event{At: at, Action: "claim", By: "crashed"})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	claim(time.Now())
	if code, _, errOut := e.run("release", id); code != 1 || !strings.Contains(errOut, "is releasing") {
		t.Fatalf("release of a claimed item: %d %q", code, errOut)
	}
	if code, _, errOut := e.run("release", "--force", id); code != 1 || !strings.Contains(errOut, "may still be running") {
		t.Fatalf("release --force of a fresh claim: %d %q", code, errOut)
	}
	claim(time.Now().Add(-time.Hour))
	code, out, errOut := e.run("release", "--force", id)
	if code != 0 || !strings.Contains(errOut, "stale release claim") || !strings.Contains(out, "released "+id) {
		t.Fatalf("release --force: %d %q %q", code, out, errOut)
	}
	if got := e.down.WaitMessages(t, 1, 5*time.Second); len(got) != 1 {
		t.Fatalf("%d deliveries", len(got))
	}
}
