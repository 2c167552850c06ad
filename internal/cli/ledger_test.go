package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// lockedBuffer collects log output written from the validator's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// ledgerTestnet runs 'cloister ledger testnet --validators 1' (with
// --chain-id chainID unless it is "") and then
// 'cloister ledger start' for its one validator in-process (on its own
// command tree, so runCLI can be used meanwhile). It returns the API URL;
// the validator stops, and the start command must return cleanly, at the
// end of the test.
func ledgerTestnet(t *testing.T, chainID string) string {
	t.Helper()
	_, url := ledgerTestnetHome(t, chainID)
	return url
}

// ledgerTestnetHome is ledgerTestnet that also returns the validator's
// home.
func ledgerTestnetHome(t *testing.T, chainID string) (string, string) {
	t.Helper()
	return ledgerTestnetPrepared(t, chainID, nil)
}

// ledgerTestnetPrepared is ledgerTestnetHome with prepare (unless nil)
// called on the validator's home before it starts.
func ledgerTestnetPrepared(t *testing.T, chainID string, prepare func(home string)) (string, string) {
	t.Helper()
	dir := t.TempDir()
	args := []string{"ledger", "testnet", "--validators", "1", "--out", dir}
	if chainID != "" {
		args = append(args, "--chain-id", chainID)
	}
	code, out, errOut := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("testnet: exit %d: %s", code, errOut)
	}
	home, url, ok := strings.Cut(strings.TrimSpace(out), " ")
	if !ok || home != filepath.Join(dir, "v0") || !strings.HasPrefix(url, "http://127.0.0.1:") || strings.Count(out, "\n") != 1 {
		t.Fatalf("testnet printed %q, want one line \"%s/v0 http://127.0.0.1:PORT\"", out, dir)
	}
	if prepare != nil {
		prepare(home)
	}

	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedBuffer{}
	cmd := newLedgerCmd()
	cmd.SetArgs([]string{"start", "--home", home})
	cmd.SetErr(logs)
	cmd.SetOut(logs)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ledger start returned %v\n%s", err, logs.String())
			}
			if !strings.Contains(logs.String(), "ledger validator running") || !strings.Contains(logs.String(), "stopping") {
				t.Errorf("start logs lack the running and stopping lines:\n%s", logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("ledger start did not stop")
		}
	})

	c, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := c.Status(ctx)
		if err == nil && st.Height > 0 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("ledger start ended early: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("validator API not up: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return home, url
}

func TestLedgerCommandsEndToEnd(t *testing.T) {
	url := ledgerTestnet(t, "cli-e2e")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "alice.key")
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Save(keyFile); err != nil {
		t.Fatal(err)
	}
	submitter := protocol.FormatEd25519Key(k.Public().Signing)

	// append: inline body, then @FILE with --json.
	code, out, errOut := runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--kind", "note", "--body", `{"text": "hello", "n": 1}`)
	if code != 0 || out != "0\n" {
		t.Fatalf("append: exit %d, stdout %q, stderr %s", code, out, errOut)
	}
	bodyFile := filepath.Join(dir, "body.json")
	os.WriteFile(bodyFile, []byte("{\"text\": \"from a file\"}\n"), 0o644)
	code, out, errOut = runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--body", "@"+bodyFile, "--json")
	var rc struct {
		Index    uint64 `json:"index"`
		Height   int64  `json:"height"`
		LeafHash string `json:"leaf_hash"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &rc) != nil || rc.Index != 1 || rc.Height < 1 {
		t.Fatalf("append --json: exit %d, stdout %q, stderr %s", code, out, errOut)
	}

	// get, human and JSON.
	code, out, _ = runCLI(t, "ledger", "get", "--ledger", url, "0")
	for _, want := range []string{"index:      0\n", "kind:       note\n", "submitter:  " + submitter + "\n", "signature:  valid\n", `body:       {"n":1,"text":"hello"}` + "\n"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("get: exit %d, output lacks %q:\n%s", code, want, out)
		}
	}
	code, out, _ = runCLI(t, "ledger", "get", "--ledger", url, "1", "--json")
	var got struct {
		Index    uint64          `json:"index"`
		LeafHash string          `json:"leaf_hash"`
		Entry    json.RawMessage `json:"entry"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("get --json: exit %d, %q", code, out)
	}
	se, err := verify.DecodeEntry(got.Entry)
	if err != nil || se.VerifySignature() != nil || string(se.Entry.Body) != `{"text":"from a file"}` {
		t.Fatalf("get --json entry %s: %v", got.Entry, err)
	}
	if lh := verify.LeafHash(got.Entry); got.LeafHash != base64.StdEncoding.EncodeToString(lh[:]) || got.LeafHash != rc.LeafHash {
		t.Fatalf("get --json leaf hash %s, receipt said %s", got.LeafHash, rc.LeafHash)
	}

	// proof --json: check the audit path here, independently of the CLI.
	code, out, errOut = runCLI(t, "ledger", "proof", "--ledger", url, "1", "--json")
	var pr struct {
		Index      int64           `json:"index"`
		Size       int64           `json:"size"`
		Root       string          `json:"root"`
		Hashes     []string        `json:"hashes"`
		Checkpoint string          `json:"checkpoint"`
		Entry      json.RawMessage `json:"entry"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &pr) != nil {
		t.Fatalf("proof --json: exit %d, %q, %s", code, out, errOut)
	}
	var proof tlog.RecordProof
	for _, h := range pr.Hashes {
		hh, err := tlog.ParseHash(h)
		if err != nil {
			t.Fatal(err)
		}
		proof = append(proof, hh)
	}
	root, _ := tlog.ParseHash(pr.Root)
	if err := tlog.CheckRecord(proof, pr.Size, root, 1, verify.LeafHash(pr.Entry)); err != nil || pr.Size < 2 {
		t.Fatalf("proof bundle does not check: %v (size %d)", err, pr.Size)
	}
	if !strings.HasPrefix(pr.Checkpoint, "cloister.ledger/cli-e2e\n"+strconv.FormatInt(pr.Size, 10)+"\n"+pr.Root+"\n\n— cli-e2e/validator-") {
		t.Fatalf("proof checkpoint %q", pr.Checkpoint)
	}
	code, out, _ = runCLI(t, "ledger", "proof", "--ledger", url, "0")
	if code != 0 || !strings.Contains(out, "entry 0 in the log of cloister.ledger/cli-e2e") || !strings.Contains(out, "audit path") {
		t.Fatalf("proof: exit %d\n%s", code, out)
	}

	// verify: first use pins the set, later runs prove consistency.
	state := filepath.Join(dir, "audit", "ledger.json")
	code, out, errOut = runCLI(t, "ledger", "verify", "--ledger", url, "--index", "1", "--state", state)
	if code != 0 || !strings.Contains(out, "verified cloister.ledger/cli-e2e") || !strings.Contains(out, "first use") ||
		!strings.Contains(out, "entry 1 (note) is included, signed by "+submitter) {
		t.Fatalf("verify: exit %d\n%s\n%s", code, out, errOut)
	}
	fi, err := os.Stat(state)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file: %v %v", fi, err)
	}
	code, out, _ = runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--body", `{"text":"third"}`)
	if code != 0 || out != "2\n" {
		t.Fatalf("third append: %d %q", code, out)
	}
	code, out, errOut = runCLI(t, "ledger", "verify", "--ledger", url, "--index", "2", "--state", state, "--json")
	var vr struct {
		Verified     bool    `json:"verified"`
		FirstUse     bool    `json:"first_use"`
		Size         uint64  `json:"size"`
		PreviousSize *uint64 `json:"previous_size"`
		State        string  `json:"state"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &vr) != nil || !vr.Verified || vr.FirstUse || vr.PreviousSize == nil || *vr.PreviousSize < 2 || vr.Size < 3 || vr.State != state {
		t.Fatalf("second verify: exit %d %q %s", code, out, errOut)
	}
	st, err := client.LoadState(state)
	if err != nil || st == nil {
		t.Fatalf("state after verify: %v", err)
	}
	if cp, _ := st.TrustedCheckpoint(); cp.Size != vr.Size {
		t.Fatalf("state holds size %d, verify reported %d", cp.Size, vr.Size)
	}

	// Default state file: under the user config directory, per origin.
	cfg := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", cfg)
	t.Setenv("HOME", cfg)
	code, out, _ = runCLI(t, "ledger", "verify", "--ledger", url)
	want, _ := client.DefaultStatePath("cloister.ledger/cli-e2e")
	if code != 0 || !strings.Contains(out, "state: "+want+"\n") || !strings.HasPrefix(want, cfg) {
		t.Fatalf("verify with the default state: exit %d\n%s (want state %s)", code, out, want)
	}

	// tail prints what is there, then stops cleanly with its context.
	ctx, cancel := context.WithCancel(context.Background())
	var tailOut lockedBuffer
	tail := newLedgerCmd()
	tail.SetArgs([]string{"tail", "--ledger", url, "--from", "1", "--interval", "50ms"})
	tail.SetOut(&tailOut)
	tailDone := make(chan error, 1)
	go func() { tailDone <- tail.ExecuteContext(ctx) }()
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(tailOut.String(), "\n") < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	// A new entry shows up while tail is polling.
	if code, _, errOut := runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--body", `{"text":"live"}`); code != 0 {
		t.Fatalf("append during tail: %s", errOut)
	}
	for strings.Count(tailOut.String(), "\n") < 3 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-tailDone; err != nil {
		t.Fatalf("tail: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(tailOut.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "1\t") || !strings.HasSuffix(lines[2], `{"text":"live"}`) || !strings.Contains(lines[1], "\tnote\t"+submitter+"\t") {
		t.Fatalf("tail printed:\n%s", tailOut.String())
	}
}

func TestLedgerVerifyFailuresAndUsage(t *testing.T) {
	url := ledgerTestnet(t, "cli-fail")
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "k.key")
	k, _ := keys.Generate()
	if err := k.Save(keyFile); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state.json")
	if code, _, errOut := runCLI(t, "ledger", "verify", "--ledger", url, "--state", state); code != 0 {
		t.Fatalf("first verify: %s", errOut)
	}

	// The state pins this ledger's validator set: another ledger with the
	// same chain id (a different genesis, other keys) fails verification.
	other := ledgerTestnet(t, "cli-fail")
	code, _, errOut := runCLI(t, "ledger", "verify", "--ledger", other, "--state", state)
	if code != 1 || !strings.Contains(errOut, "ledger verification failed: the server's genesis differs from the one pinned in "+state) {
		t.Fatalf("verify against another ledger: exit %d, stderr %s", code, errOut)
	}
	// … and the state still trusts the first.
	if code, _, errOut := runCLI(t, "ledger", "verify", "--ledger", url, "--state", state); code != 0 {
		t.Fatalf("verify after the failure: %s", errOut)
	}

	// A state file that cannot be read or trusted is unreadable input:
	// exit 2. One that is consistent but pins other powers is a
	// different validator set: exit 1.
	b, _ := os.ReadFile(state)
	edited := filepath.Join(dir, "edited.json")
	os.WriteFile(edited, b[:len(b)/2], 0o600)
	if code, _, errOut := runCLI(t, "ledger", "verify", "--ledger", url, "--state", edited); code != 2 || !strings.Contains(errOut, "ledger state file "+edited) {
		t.Fatalf("verify with a truncated state: exit %d, %s", code, errOut)
	}
	at := bytes.Index(b, []byte(`"validator_set"`))
	os.WriteFile(edited, append(bytes.Clone(b[:at]), bytes.Replace(b[at:], []byte(`"power": 1`), []byte(`"power": 2`), 1)...), 0o600)
	if code, _, errOut := runCLI(t, "ledger", "verify", "--ledger", url, "--state", edited); code != 1 || !strings.Contains(errOut, "power 1 instead of 2") {
		t.Fatalf("verify with other pinned powers: exit %d, %s", code, errOut)
	}

	// The state machine's refusal: exit 1 with its reason.
	code, _, errOut = runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--kind", "session.event",
		"--body", `{"session":"s1","event":"session.created","policy_hash":"`+strings.Repeat("ab", 32)+`"}`)
	if code != 1 || !strings.Contains(errOut, "the ledger refused the entry (unauthorized)") {
		t.Fatalf("refused append: exit %d, %s", code, errOut)
	}

	// Unreachable ledger: the operation failed (1).
	if code, _, _ := runCLI(t, "ledger", "verify", "--ledger", "http://127.0.0.1:1", "--state", state); code != 1 {
		t.Fatalf("unreachable ledger: exit %d, want 1", code)
	}
	if code, _, _ := runCLI(t, "ledger", "get", "--ledger", url, "999"); code != 1 {
		t.Fatalf("get of a missing entry: exit %d, want 1", code)
	}

	t.Setenv("CLOISTER_LEDGER", "")
	for _, args := range [][]string{
		{"ledger", "verify"}, // no --ledger
		{"ledger", "verify", "--ledger", "ftp://127.0.0.1:80"},     // not an http(s) URL (a bare HOST:PORT is http)
		{"ledger", "verify", "--ledger", url, "--index", "-1"},     // bad index
		{"ledger", "get", "--ledger", url, "x"},                    // bad INDEX
		{"ledger", "get", "--ledger", url},                         // missing INDEX
		{"ledger", "proof", "--ledger", url, "1", "2"},             // extra argument
		{"ledger", "append", "--ledger", url, "--body", `{"a":1}`}, // no --key
		{"ledger", "append", "--ledger", url, "--key", keyFile, "--kind", "bogus", "--body", `{}`},
		{"ledger", "append", "--ledger", url, "--key", keyFile, "--body", `[1,2]`},
		{"ledger", "append", "--ledger", url, "--key", keyFile, "--body", `{"a":`},
		{"ledger", "append", "--ledger", url, "--key", keyFile, "--body", "@" + filepath.Join(dir, "missing.json")},
		{"ledger", "append", "--ledger", url, "--key", filepath.Join(dir, "missing.key"), "--body", `{}`},
		{"ledger", "testnet", "--validators", "0", "--out", dir},
		{"ledger", "testnet", "--validators", "2"},
		{"ledger", "start"},
		{"ledger", "tail", "--ledger", url, "--interval", "1ns"},
		{"ledger", "verify", "--ledger", url, "--bogus"},
	} {
		if code, _, errOut := runCLI(t, args...); code != 2 {
			t.Errorf("%q: exit %d, want 2 (stderr %s)", args, code, errOut)
		}
	}
	if code, out, _ := runCLI(t, "ledger", "verify", "--help"); code != 0 || !strings.Contains(out, "Exit status: 0 verified; 1 verification failed") {
		t.Errorf("verify --help: exit %d\n%s", code, out)
	}
}

// TestNewTestnetsMeetNoOldState: two testnets made with the default chain
// id are two ledgers to a client keeping its state by origin, so the
// second never trips the "validator set differs" alarm of the first;
// while a ledger that keeps its name — a consortium's — and is then shown
// with another validator set still does. (Not parallel: the state lives
// in the user config directory, which the test sets.)
func TestNewTestnetsMeetNoOldState(t *testing.T) {
	config := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", config)
	a, b := ledgerTestnet(t, ""), ledgerTestnet(t, "")
	states := map[string]bool{}
	for _, u := range []string{a, b} {
		code, out, errOut := runCLI(t, "ledger", "verify", "--ledger", u)
		if code != 0 || !strings.Contains(out, "first use: pinned") || !strings.Contains(out, "verified cloister.ledger/cloister-testnet-") {
			t.Fatalf("verify %s: exit %d\n%s%s", u, code, out, errOut)
		}
		_, st, _ := strings.Cut(out, "state: ")
		states[strings.TrimSpace(st)] = true
	}
	if len(states) != 2 {
		t.Errorf("two testnets share a state file: %v", states)
	}
	for p := range states {
		if !strings.HasPrefix(p, filepath.Join(config, "cloister")) {
			t.Errorf("state file %s is not in the user config directory %s", p, config)
		}
	}

	// A consortium's ledger keeps its chain id; another set under that
	// name — another genesis, or a compromised server — is refused.
	real, impostor := ledgerTestnet(t, "acme-consortium"), ledgerTestnet(t, "acme-consortium")
	mustCLI(t, "ledger", "verify", "--ledger", real)
	code, _, errOut := runCLI(t, "ledger", "verify", "--ledger", impostor)
	if code != 1 || !strings.Contains(errOut, "the server's genesis differs from the one pinned in") ||
		!strings.Contains(errOut, "another ledger or a compromised server") {
		t.Errorf("another validator set under the consortium's name: exit %d %q", code, errOut)
	}
	golden(t, "validator-set-alarm", code, regexp.MustCompile(`validator-[0-9a-f]{8}`).ReplaceAllString(errOut, "validator-HEX"), config)
	mustCLI(t, "ledger", "verify", "--ledger", real) // the real one still verifies
}
