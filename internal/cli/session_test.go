package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/loopback"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/node"
)

// startSessionNode serves a node on loopback for the CLI tests. Programs
// run in-process (this test binary has no isolate worker entry point); the
// node tests cover the jailed path.
func startSessionNode(t *testing.T) (url, dir string) {
	t.Helper()
	dir = t.TempDir()
	rt, err := isolate.New(context.Background(), isolate.Options{InProcess: true})
	if err != nil {
		t.Fatal(err)
	}
	// The node records on an embedded ledger, as 'cloister node' does by
	// default.
	e, err := ledger.OpenEmbedded(context.Background(), filepath.Join(dir, "node-data", "ledger"), ledger.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n, err := node.New(context.Background(), node.Options{DataDir: filepath.Join(dir, "node-data"), Runner: rt, NoSync: true,
		Ledger: e, LedgerName: ledger.Origin(e.ChainID()), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if err := n.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("node: %v", err)
		}
	}()
	t.Cleanup(func() { n.Close(); rt.Close(); e.Close() })
	return "https://" + ln.Addr().String(), dir
}

func mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("cloister %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func publicKeys(t *testing.T, keyFile string) (signing, sealing string) {
	t.Helper()
	var pub struct{ SigningKey, SealingKey string }
	out := mustCLI(t, "key", "public", keyFile, "--json")
	if err := json.Unmarshal([]byte(out), &struct {
		S *string `json:"signing_key"`
		H *string `json:"sealing_key"`
	}{&pub.SigningKey, &pub.SealingKey}); err != nil {
		t.Fatalf("key public --json: %v: %s", err, out)
	}
	return pub.SigningKey, pub.SealingKey
}

// TestSessionCLIEndToEnd follows docs/sessions.md with the sum program.
func TestSessionCLIEndToEnd(t *testing.T) {
	url, dir := startSessionNode(t)
	at := func(name string) string { return filepath.Join(dir, name) }
	for _, p := range []string{"alice", "bob", "carol", "dave"} {
		mustCLI(t, "key", "new", "--out", at(p+".key"))
	}
	platform, _ := publicKeys(t, at("node-data/platform.key"))
	wasm, err := os.ReadFile(filepath.Join("..", "..", "node", "testdata", "sum.wasm"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(at("sum.wasm"), wasm, 0o644)
	os.WriteFile(at("a.txt"), []byte("hello"), 0o644)
	os.WriteFile(at("b.txt"), []byte("world"), 0o644)
	pr := func(id, role string, reader bool) string {
		s, h := publicKeys(t, at(id+".key"))
		if reader {
			return fmt.Sprintf(`{"id": %q, "signing_key": %q, "sealing_key": %q, "roles": [%q]}`, id, s, h, role)
		}
		return fmt.Sprintf(`{"id": %q, "signing_key": %q, "roles": [%q]}`, id, s, role)
	}
	policyText := func(maxOutput string) string {
		return fmt.Sprintf(`{
  "version": 1, "name": "sum",
  "principals": [%s, %s, %s, %s],
  "programs": [{"name": "sum.wasm", "sha256": %q, "provider": "alice"}],
  "inputs": [{"name": "a", "provider": "bob"}, {"name": "b", "provider": "carol"}],
  "outputs": [{"name": "sum", "readers": ["dave"]}],
  "isolates": [{"class": "software", "platform_keys": [%q]}],
  "limits": {"memory": "16MiB", "timeout": "30s", "max_output": %q},
  "deterministic": true,
  "expires": "2099-01-01T00:00:00Z"
}`, pr("alice", "program-provider", false), pr("bob", "data-provider", false), pr("carol", "data-provider", false),
			pr("dave", "result-reader", true), sha256hex(wasm), platform, maxOutput)
	}
	os.WriteFile(at("policy.json"), []byte(policyText("4KiB")), 0o644)
	os.WriteFile(at("other.json"), []byte(policyText("8KiB")), 0o644)
	mustCLI(t, "policy", "validate", at("policy.json"))

	id := strings.TrimSpace(mustCLI(t, "session", "create", "--node", url, "--policy", at("policy.json")))
	if len(id) != 32 {
		t.Fatalf("session create printed %q, want a session id", id)
	}
	base := []string{"--node", url, "--session", id, "--policy", at("policy.json")}
	var att attestJSON
	if err := json.Unmarshal([]byte(mustCLI(t, append([]string{"session", "attest", "--json"}, base...)...)), &att); err != nil {
		t.Fatal(err)
	}
	if !att.Verified || att.SessionID != id || att.Class != "software" || len(att.PolicyHash) != 64 {
		t.Fatalf("attest --json: %+v", att)
	}

	// A policy differing in one field: attest and upload refuse, exit 1.
	other := []string{"--node", url, "--session", id, "--policy", at("other.json")}
	code, _, errOut := runCLI(t, append([]string{"session", "upload", "--key", at("alice.key"), "--program", "sum.wasm=" + at("sum.wasm")}, other...)...)
	if code != 1 || !strings.Contains(errOut, "policy hash mismatch") {
		t.Fatalf("upload under another policy: exit %d, %s", code, errOut)
	}
	// The wrong provider: exit 1 naming the rule and the principal.
	code, _, errOut = runCLI(t, append([]string{"session", "upload", "--key", at("bob.key"), "--program", "sum.wasm=" + at("sum.wasm")}, base...)...)
	if code != 1 || !strings.Contains(errOut, "listed-provider-only") || !strings.Contains(errOut, `"bob"`) {
		t.Fatalf("bob uploading the program: exit %d, %s", code, errOut)
	}
	// Bad usage: exit 2.
	if code, _, _ := runCLI(t, append([]string{"session", "upload", "--key", at("missing.key"), "--input", "a=" + at("a.txt")}, base...)...); code != 2 {
		t.Fatalf("missing key file: exit %d, want 2", code)
	}
	if code, _, _ := runCLI(t, "session", "attest", "--node", url, "--session", "not-an-id", "--policy", at("policy.json")); code != 2 {
		t.Fatalf("bad session id: exit %d, want 2", code)
	}
	if code, _, _ := runCLI(t, append([]string{"session", "upload", "--key", at("bob.key")}, base...)...); code != 2 {
		t.Fatalf("upload without --program or --input: exit %d, want 2", code)
	}

	mustCLI(t, append([]string{"session", "upload", "--key", at("alice.key"), "--program", "sum.wasm=" + at("sum.wasm")}, base...)...)
	mustCLI(t, append([]string{"session", "upload", "--key", at("bob.key"), "--input", "a=" + at("a.txt")}, base...)...)
	mustCLI(t, append([]string{"session", "upload", "--key", at("carol.key"), "--input", "b=" + at("b.txt")}, base...)...)
	// Not a reader: exit 1.
	code, _, errOut = runCLI(t, append([]string{"session", "result", "--key", at("carol.key"), "--output", "sum", "--out", at("x"), "--wait", "30s"}, base...)...)
	if code != 1 || !strings.Contains(errOut, "readers-only") {
		t.Fatalf("carol reading: exit %d, %s", code, errOut)
	}
	mustCLI(t, append([]string{"session", "result", "--key", at("dave.key"), "--output", "sum", "--out", at("sum.txt"), "--wait", "30s"}, base...)...)
	got, err := os.ReadFile(at("sum.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, c := range []byte("helloworld") {
		want += int(c)
	}
	if string(got) != fmt.Sprintf("%d\n", want) {
		t.Fatalf("sum.txt = %q, want %d", got, want)
	}
	var st statusJSON
	if err := json.Unmarshal([]byte(mustCLI(t, "session", "status", "--node", url, "--session", id, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.State != "finished" || len(st.Outputs) != 1 || len(st.Outputs[0].FetchedBy) != 1 || st.Outputs[0].FetchedBy[0] != "dave" {
		t.Fatalf("status: %+v", st)
	}
	// Every event is on the ledger, in order, after the node's
	// registration (index 0), and the human form shows the indexes.
	kinds := []string{node.EventSessionCreated, node.EventProgramUploaded, node.EventInputUploaded, node.EventInputUploaded,
		node.EventRunFinished, node.EventResultFetched}
	if len(st.Events) != len(kinds) {
		t.Fatalf("status events %+v", st.Events)
	}
	human := mustCLI(t, "session", "status", "--node", url, "--session", id)
	for i, e := range st.Events {
		if e.Kind != kinds[i] || e.LedgerIndex != uint64(i+1) {
			t.Errorf("event %d: %s at ledger index %d, want %s at %d", i, e.Kind, e.LedgerIndex, kinds[i], i+1)
		}
		if !strings.Contains(human, fmt.Sprintf("ledger #%d\n", i+1)) {
			t.Errorf("human status lacks ledger #%d:\n%s", i+1, human)
		}
	}
	mustCLI(t, append([]string{"session", "close", "--key", at("carol.key")}, base...)...)
	if err := json.Unmarshal([]byte(mustCLI(t, "session", "status", "--node", url, "--session", id, "--json")), &st); err != nil || st.State != "closed" {
		t.Fatalf("status after close: %+v %v", st, err)
	}
}

// startNodeCommand runs 'cloister node' in-process with args on a free
// port and waits until it serves; stop ends it and checks it stopped
// cleanly.
func startNodeCommand(t *testing.T, dataDir string, args ...string) (addr string, logs *lockedBuffer, stop func()) {
	t.Helper()
	ln, err := loopback.Listen()
	if err != nil {
		t.Fatal(err)
	}
	addr = ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	logs = &lockedBuffer{}
	done := make(chan error, 1)
	cmd := newNodeCmd()
	cmd.SetArgs(append([]string{"--listen", addr, "--data", dataDir, "--warm-workers", "0"}, args...))
	cmd.SetErr(logs)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(logs.String(), "node listening") {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("node exited early: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("node did not start: %s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr, logs, func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("node exited with %v\n%s", err, logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("node did not stop")
		}
	}
}

// TestNodeCommand runs 'cloister node' in-process: it creates its platform
// key, registers on its embedded ledger, serves sessions on its port and
// the ledger API on another, and stops cleanly when its context ends; a
// second start neither registers again nor loses the ledger.
func TestNodeCommand(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	addr, logs, stop := startNodeCommand(t, data, "--ledger-listen", "127.0.0.1:0")
	keyFile := filepath.Join(data, "platform.key")
	pk, err := keys.Load(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	c, err := client.Dial(ctx, "https://"+addr, client.WithPlatformKeys(pk.Public().Signing))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info, err := c.NodeInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.IsolateClass != "software" || info.PlatformKey != pk.Public().SigningString() {
		t.Fatalf("node info %v", info)
	}
	registrations := func(url string) int {
		t.Helper()
		lc, err := lclient.New(url)
		if err != nil {
			t.Fatal(err)
		}
		page, err := lc.Entries(ctx, 0, 100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range page.Entries {
			if e.Signed.Entry.Kind == ledger.KindNodeRegistered {
				if e.Signed.Entry.Submitter != protocol.FormatEd25519Key(pk.Public().Signing) {
					t.Fatalf("registration by %s, not the platform key", e.Signed.Entry.Submitter)
				}
				n++
			}
		}
		return n
	}
	ledgerURL := logValue(t, logs.String(), "ledger API listening", "url")
	if got := registrations(ledgerURL); got != 1 {
		t.Fatalf("%d registrations, want 1", got)
	}
	stop()
	if !strings.Contains(logs.String(), "registered on the ledger") {
		t.Fatalf("logs lack the registration:\n%s", logs.String())
	}

	_, logs, stop = startNodeCommand(t, data, "--ledger-listen", "127.0.0.1:0")
	if got := registrations(logValue(t, logs.String(), "ledger API listening", "url")); got != 1 {
		t.Fatalf("%d registrations after a restart, want 1", got)
	}
	stop()
	if strings.Contains(logs.String(), "registered on the ledger") {
		t.Fatalf("registered again after a restart:\n%s", logs.String())
	}

	// Without a ledger: nothing registered, nothing opened.
	noData := filepath.Join(dir, "no-ledger")
	_, _, stop = startNodeCommand(t, noData, "--no-ledger")
	stop()
	for _, f := range []string{"ledger", node.RegistrationFile} {
		if _, err := os.Stat(filepath.Join(noData, f)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("--no-ledger left %s: %v", f, err)
		}
	}
}

// logValue finds key=value on the log line containing msg.
func logValue(t *testing.T, logs, msg, key string) string {
	t.Helper()
	for _, line := range strings.Split(logs, "\n") {
		if !strings.Contains(line, msg) {
			continue
		}
		for _, f := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(f, key+"="); ok {
				return v
			}
		}
	}
	t.Fatalf("no %s= on a %q log line:\n%s", key, msg, logs)
	return ""
}

func TestNodeLedgerFlagsUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--no-ledger", "--ledger", "http://127.0.0.1:1"},
		{"--no-ledger", "--ledger-listen", "127.0.0.1:0"},
		{"--ledger", "http://127.0.0.1:1", "--ledger-listen", "127.0.0.1:0"},
		{"--ledger-listen", "0.0.0.0:7480"},
	} {
		code, _, errOut := runCLI(t, append([]string{"node", "--data", t.TempDir()}, args...)...)
		if code != 2 || !strings.Contains(errOut, "ledger") {
			t.Errorf("node %v: exit %d, %s", args, code, errOut)
		}
	}
}
