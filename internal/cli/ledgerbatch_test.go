package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/client"
)

// writeBodies writes n note bodies {"i":0} … as JSON Lines, with a blank
// line and a CR LF among them, and returns the file.
func writeBodies(t *testing.T, dir string, n int) string {
	t.Helper()
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"i": %d}`, i)
		switch i {
		case 1:
			b.WriteString("\r\n\n")
		default:
			b.WriteString("\n")
		}
	}
	name := filepath.Join(dir, fmt.Sprintf("bodies-%d.jsonl", n))
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return name
}

func newKeyFile(t *testing.T, dir string) string {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(dir, "k.key")
	if err := k.Save(name); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestLedgerAppendBodies: --bodies appends one entry per line, in order,
// each batch-signed and verifying on its own; --json prints the receipts;
// refusals name their lines; bad input is refused before anything is sent.
func TestLedgerAppendBodies(t *testing.T) {
	t.Parallel()
	url := ledgerTestnet(t, "cli-bodies")
	dir := t.TempDir()
	keyFile := newKeyFile(t, dir)
	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// 300 bodies: two batches of 150 under one signature each.
	code, out, errOut := runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--bodies", writeBodies(t, dir, 300))
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != 0 || len(lines) != 300 {
		t.Fatalf("append --bodies: exit %d, %d lines, stderr %s", code, len(lines), errOut)
	}
	for i, l := range lines {
		if l != strconv.Itoa(i) {
			t.Fatalf("line %d of the output is %q, want %d", i, l, i)
		}
	}
	page, err := c.Entries(ctx, 0, 1000)
	if err != nil || len(page.Entries) != 300 {
		t.Fatalf("entries: %v (%d)", err, len(page.Entries))
	}
	sigs := map[string]int{}
	for i, e := range page.Entries {
		se := e.Signed
		if se.Batch == nil || se.Batch.Count != 150 || se.VerifySignature() != nil || string(se.Entry.Body) != fmt.Sprintf(`{"i":%d}`, i) || se.Entry.Kind != "note" {
			t.Fatalf("entry %d: batch %+v, signature %v, body %s", i, se.Batch, se.VerifySignature(), se.Entry.Body)
		}
		sigs[string(se.Signature)]++
	}
	if len(sigs) != 2 {
		t.Fatalf("300 entries under %d signatures, want 2", len(sigs))
	}
	if out := mustCLI(t, "ledger", "get", "--ledger", url, "299"); !strings.Contains(out, "signature:  valid\n") || !strings.Contains(out, `body:       {"i":299}`) {
		t.Fatalf("get 299:\n%s", out)
	}

	// Standard input, --json: the receipts, as append --json prints one.
	code, out, errOut = runCLIWithInput(t, strings.NewReader("{\"a\":1}\n{\"a\":2}\n{\"a\":3}"), "ledger", "append", "--ledger", url, "--key", keyFile, "--bodies", "-", "--json")
	var rcs []receiptJSON
	if code != 0 || json.Unmarshal([]byte(out), &rcs) != nil || len(rcs) != 3 {
		t.Fatalf("append --bodies - --json: exit %d, %q, %s", code, out, errOut)
	}
	for i, rc := range rcs {
		e, err := c.Get(ctx, 300+uint64(i))
		if err != nil || rc.Index != 300+uint64(i) || rc.Height < 1 || rc.LeafHash != base64.StdEncoding.EncodeToString(e.LeafHash[:]) ||
			e.Signed.Batch == nil || string(e.Signed.Entry.Body) != fmt.Sprintf(`{"a":%d}`, i+1) {
			t.Fatalf("receipt %d %+v, entry %+v: %v", i, rc, e, err)
		}
	}

	// Entries the ledger refuses: a run of lines with one reason, exit 1.
	bad := filepath.Join(dir, "events.jsonl")
	ev := `{"session":"s1","event":"session.created","policy_hash":"` + strings.Repeat("ab", 32) + `"}`
	os.WriteFile(bad, []byte(ev+"\n"+ev+"\n"), 0o644)
	code, out, errOut = runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--kind", "session.event", "--bodies", bad)
	if code != 1 || out != "" || !strings.Contains(errOut, "cloister: ledger append: lines 1 to 2 (2 entries): the ledger refused the entries (unauthorized)") ||
		!strings.Contains(errOut, "none of the 2 entries was appended") {
		t.Fatalf("refused bodies: exit %d, stdout %q, stderr %s", code, out, errOut)
	}

	// Bad usage: exit 2, naming what is wrong, and nothing appended.
	notObject := filepath.Join(dir, "array.jsonl")
	os.WriteFile(notObject, []byte("{\"ok\":1}\n\n[1,2]\n{\"ok\":2}\n"), 0o644)
	notJSON := filepath.Join(dir, "text.jsonl")
	os.WriteFile(notJSON, []byte("{}\nhello\n"), 0o644)
	long := filepath.Join(dir, "long.jsonl")
	os.WriteFile(long, []byte(`{"ok":1}`+"\n"+`{"t":"`+strings.Repeat("x", 64<<10)+`"}`+"\n"), 0o644)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--body", `{"a":1}`, "--bodies", notObject}, []string{"--body", "--bodies"}},
		{[]string{"--bodies", notObject}, []string{"line 3 must be a JSON object"}},
		{[]string{"--bodies", writeBodies(t, dir, 10_001)}, []string{"line 10001", "more than 10000 lines"}},
		{[]string{"--bodies", long}, []string{"line 2 is longer than 65536 bytes"}},
		{[]string{"--bodies", filepath.Join(dir, "missing.jsonl")}, []string{"missing.jsonl"}},
		{[]string{"--bodies", notJSON}, []string{"line 2 is not valid JSON"}},
	} {
		args := append([]string{"ledger", "append", "--ledger", url, "--key", keyFile}, tc.args...)
		code, _, errOut := runCLI(t, args...)
		for _, w := range tc.want {
			if code != 2 || !strings.Contains(errOut, w) {
				t.Errorf("%q: exit %d, want 2 and %q in stderr: %s", tc.args, code, w, errOut)
			}
		}
	}
	if st, err := c.Status(ctx); err != nil || st.Size != 303 {
		t.Fatalf("after the refusals the log holds %v entries (%v), want 303", st, err)
	}

	// --wait bounds the whole run.
	code, _, errOut = runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--bodies", writeBodies(t, dir, 300), "--wait", "1ms")
	if code != 1 || !strings.Contains(errOut, "the entries were not committed within") || !strings.Contains(errOut, "(--wait)") {
		t.Fatalf("append --bodies --wait 1ms: exit %d, stderr %s", code, errOut)
	}
}

// TestLedgerAppendBodiesOldRules: a chain at rule version 17 refuses
// batch-signed entries, and append says why in the ledger's words.
func TestLedgerAppendBodiesOldRules(t *testing.T) {
	t.Parallel()
	_, url := ledgerTestnetPrepared(t, "cli-bodies-v17", func(home string) {
		g := filepath.Join(home, "config", "genesis.json")
		b, err := os.ReadFile(g)
		v18 := regexp.MustCompile(`"rules_version":\s*18\b`)
		if err != nil || !v18.Match(b) {
			t.Fatalf("genesis: %v\n%s", err, b)
		}
		os.WriteFile(g, v18.ReplaceAll(b, []byte(`"rules_version": 17`)), 0o644)
	})
	dir := t.TempDir()
	code, out, errOut := runCLI(t, "ledger", "append", "--ledger", url, "--key", newKeyFile(t, dir), "--bodies", writeBodies(t, dir, 3))
	if code != 1 || out != "" || !strings.Contains(errOut, "lines 1 to 4 (3 entries): the ledger refused the entries (malformed): entry is batch-signed; rule version 17 takes only entries signed alone (batch signatures from version 18)") {
		t.Fatalf("append --bodies at rule version 17: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
}
