package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/keys"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
)

// opsParties are the principals of the operations test's policies: alice
// provides the program, bob and carol the inputs, dave reads the result.
type opsParties struct{ alice, bob, carol, dave *keys.PrivateKey }

func newOpsParties(t *testing.T) opsParties {
	t.Helper()
	var p opsParties
	for _, k := range []**keys.PrivateKey{&p.alice, &p.bob, &p.carol, &p.dave} {
		var err error
		if *k, err = keys.Generate(); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// policy is a policy for opsTestdata's program on the node with
// platformKey.
func (p opsParties) policy(t *testing.T, platformKey, program string, wasm []byte) (*policy.Policy, []byte) {
	t.Helper()
	pr := func(id string, k *keys.PrivateKey, role string) map[string]any {
		return map[string]any{"id": id, "signing_key": k.Public().SigningString(), "sealing_key": k.Public().SealingString(), "roles": []string{role}}
	}
	sum := sha256.Sum256(wasm)
	doc, err := json.Marshal(map[string]any{
		"version": 1, "name": "ops-" + program,
		"principals": []any{pr("alice", p.alice, "program-provider"), pr("bob", p.bob, "data-provider"),
			pr("carol", p.carol, "data-provider"), pr("dave", p.dave, "result-reader")},
		"programs": []any{map[string]any{"name": program, "sha256": hex.EncodeToString(sum[:]), "provider": "alice"}},
		"inputs":   []any{map[string]any{"name": "a", "provider": "bob"}, map[string]any{"name": "b", "provider": "carol"}},
		"outputs":  []any{map[string]any{"name": "sum", "readers": []string{"dave"}}},
		"isolates": []any{map[string]any{"class": "software", "platform_keys": []string{platformKey}}},
		"limits":   map[string]any{"memory": "16MiB", "timeout": "2m", "max_output": "4KiB"},
		"expires":  time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	return pol, doc
}

// opsNode is a node process of the operations test.
type opsNode struct {
	*testbin.Node
	c *client.Client
}

func startOpsNode(t *testing.T, bin, dir string, extra ...string) *opsNode {
	t.Helper()
	args := append([]string{"--listen", "127.0.0.1:0", "--data", dir, "--ledger-listen", "127.0.0.1:0", "--warm-workers", "1"}, extra...)
	n, err := testbin.StartNode(bin, 2*time.Minute, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Kill)
	c, err := client.Dial(context.Background(), n.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &opsNode{Node: n, c: c}
}

// status runs 'cloister status --json' against the node.
func (n *opsNode) status(t *testing.T) node.Status {
	t.Helper()
	code, out, errb := runCLI(t, "status", "--node", n.URL, "--json")
	if code != 0 {
		t.Fatalf("status: %d %s", code, errb)
	}
	var st node.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// stop sends SIGTERM and waits for the process to exit, at most d.
func (n *opsNode) stop(t *testing.T, d time.Duration) {
	t.Helper()
	n.Cmd.Process.Signal(syscall.SIGTERM)
	n.wait(t, d)
}

// wait waits for the process to exit, at most d; it must exit with 0.
func (n *opsNode) wait(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-n.Done:
	case <-time.After(d):
		t.Fatalf("the node did not stop within %s of SIGTERM:\n%s", d, n.Log())
	}
	if code := n.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the node exited with %d:\n%s", code, n.Log())
	}
}

// session creates, attests and provisions a session of program.
func (p opsParties) session(ctx context.Context, t *testing.T, n *opsNode, platformKey, program string) (*client.AttestedSession, *policy.Policy) {
	t.Helper()
	wasm, err := os.ReadFile(filepath.Join(opsTestdata, program))
	if err != nil {
		t.Fatal(err)
	}
	pol, doc := p.policy(t, platformKey, program, wasm)
	id, err := n.c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	as, err := n.c.Attest(ctx, id, pol)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.CloseIdleConnections)
	if _, err := as.UploadProgram(ctx, p.alice, program, wasm); err != nil {
		t.Fatal(err)
	}
	if _, err := as.UploadInput(ctx, p.bob, "a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := as.UploadInput(ctx, p.carol, "b", []byte("world")); err != nil {
		t.Fatal(err)
	}
	return as, pol
}

func probe(t *testing.T, url string) int {
	t.Helper()
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	res, err := hc.Get(url)
	if err != nil {
		return 0
	}
	res.Body.Close()
	return res.StatusCode
}

// opsTestdata holds the node's test programs: sum.wasm adds its inputs'
// bytes, spin.wasm burns CPU for a few seconds first (sources beside them).
var opsTestdata = filepath.Join("..", "..", "node", "testdata")

const spinSum = "3051657984\n" // what spin.c writes

// TestNodeOperations runs a node as its own process and operates it as
// docs/operations.md says: status, a graceful stop that lets a run finish,
// a backup refused while the node runs and taken once it stopped, a restore
// onto a fresh directory that serves the same sessions, results and ledger,
// and a stop whose grace is too short for a run, which is recorded as
// interrupted and run again at the next start.
func TestNodeOperations(t *testing.T) {
	if testing.Short() {
		t.Skip("starts node processes")
	}
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	p := newOpsParties(t)
	dir := filepath.Join(t.TempDir(), "node")
	n := startOpsNode(t, bin, dir, "--shutdown-grace", "2m")
	st := n.status(t)
	if !st.Ready || st.Ledger.Mode != "embedded" || st.Ledger.State == nil || st.Ledger.State.Height < 1 {
		t.Fatalf("status at start: %+v", st)
	}
	pk := st.PlatformKey
	if code, out, errb := runCLI(t, "status", "--node", n.URL, "--platform-key", pk); code != 0 || !strings.Contains(out, "  ready\n") || !strings.Contains(out, "ledger     embedded") {
		t.Fatalf("status: %d\n%s%s", code, out, errb)
	}
	wrong, _ := keys.Generate()
	if code, _, errb := runCLI(t, "status", "--node", n.URL, "--platform-key", wrong.Public().SigningString()); code != 1 || !strings.Contains(errb, "platform key") {
		t.Fatalf("status pinned to another key: %d %s", code, errb)
	}

	// A finished session whose result nobody fetched yet, and a run in
	// progress when the node is told to stop.
	done, donePol := p.session(ctx, t, n, pk, "sum.wasm")
	if s, err := done.Wait(ctx); err != nil || s.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
		t.Fatalf("sum: %v %v", s, err)
	}
	spin, spinPol := p.session(ctx, t, n, pk, "spin.wasm")
	st = n.status(t)
	if st.Sessions.Finished != 1 || st.Sessions.Running != 1 || st.Workers.RunsActive != 1 {
		t.Fatalf("status with a run in progress: %+v", st.Sessions)
	}
	out := filepath.Join(t.TempDir(), "node.tar")
	if code, _, errb := runCLI(t, "backup", "create", "--data", dir, "--out", out); code != 1 || !strings.Contains(errb, "in use") {
		t.Fatalf("backup of a running node: %d %s", code, errb)
	}

	// What a client of the ledger has checked before the backup: the
	// restored ledger must be consistent with it.
	pins := filepath.Join(t.TempDir(), "ledger-state.json")
	lc0, err := lclient.New(n.LedgerURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc0.Verify(ctx, pins, nil); err != nil {
		t.Fatal(err)
	}

	n.Cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for probe(t, n.URL+node.ReadyzPath) != http.StatusServiceUnavailable {
		if time.Now().After(deadline) {
			t.Fatalf("readyz did not turn 503 after SIGTERM:\n%s", n.Log())
		}
		time.Sleep(5 * time.Millisecond)
	}
	sumWasm, _ := os.ReadFile(filepath.Join(opsTestdata, "sum.wasm"))
	_, another := p.policy(t, pk, "sum.wasm", sumWasm)
	if _, err := n.c.CreateSession(ctx, another); connect.CodeOf(err) != connect.CodeUnavailable {
		t.Fatalf("create while draining: %v", err)
	}
	n.wait(t, 2*time.Minute) // a second signal would stop it at once
	if !strings.Contains(n.Log(), "stopping: no run in progress") {
		t.Fatalf("the run did not finish within the grace:\n%s", n.Log())
	}
	ledgerSize := st.Ledger.State.Size

	// Back up the stopped node, restore it elsewhere, and serve it from
	// there.
	if code, stdout, errb := runCLI(t, "backup", "create", "--data", dir, "--out", out, "--json"); code != 0 {
		t.Fatalf("backup: %d %s", code, errb)
	} else if !strings.Contains(stdout, `"kind":"node"`) {
		t.Fatalf("backup: %s", stdout)
	}
	fresh := filepath.Join(t.TempDir(), "elsewhere", "node")
	if code, stdout, errb := runCLI(t, "backup", "restore", "--from", out, "--data", fresh); code != 0 {
		t.Fatalf("restore: %d %s", code, errb)
	} else {
		t.Log(strings.TrimSpace(stdout))
	}
	if code, _, errb := runCLI(t, "backup", "restore", "--from", out, "--data", fresh); code != 1 || !strings.Contains(errb, "not empty") {
		t.Fatalf("restore over a directory in use: %d %s", code, errb)
	}
	os.RemoveAll(dir) // the original is gone: everything comes from the archive
	n2 := startOpsNode(t, bin, fresh, "--shutdown-grace", "100ms")
	st = n2.status(t)
	if st.PlatformKey != pk || st.Sessions.Finished != 2 || st.Ledger.State == nil || st.Ledger.State.Size <= ledgerSize {
		t.Fatalf("restored node: %+v, ledger %+v (had %d entries)", st, st.Ledger.State, ledgerSize)
	}
	for _, c := range []struct {
		as   *client.AttestedSession
		pol  *policy.Policy
		want string
	}{{done, donePol, "1084\n"}, {spin, spinPol, spinSum}} {
		as, err := n2.c.Attest(ctx, c.as.ID(), c.pol)
		if err != nil {
			t.Fatalf("attest %s on the restored node: %v", c.pol.Name, err)
		}
		if as.TLSKeyHash() != c.as.TLSKeyHash() {
			t.Fatalf("%s: the session's key changed across the restore", c.pol.Name)
		}
		got, err := as.Result(ctx, p.dave, "sum")
		if err != nil || string(got) != c.want {
			t.Fatalf("%s on the restored node: %q %v", c.pol.Name, got, err)
		}
		as.CloseIdleConnections()
	}
	// The ledger came back whole: consistent with what its client had
	// verified before the backup (same validator key, a checkpoint that
	// extends the one pinned), every entry it held still there.
	lc, err := lclient.New(n2.LedgerURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lc.Verify(ctx, pins, nil); err != nil {
		t.Fatalf("verifying the restored ledger against the state pinned before the backup: %v", err)
	}
	for i := range ledgerSize {
		e, err := lc.Get(ctx, i)
		if err != nil || e == nil {
			t.Fatalf("entry %d of the restored ledger: %v", i, err)
		}
	}

	// A stop whose grace is shorter than a run: the run is interrupted,
	// recorded so, and run again at the next start.
	cut, cutPol := p.session(ctx, t, n2, pk, "spin.wasm")
	cut.CloseIdleConnections()
	n2.stop(t, time.Minute)
	if !strings.Contains(n2.Log(), "recorded as interrupted") {
		t.Fatalf("no interruption logged:\n%s", n2.Log())
	}
	n3 := startOpsNode(t, bin, fresh)
	as, err := n3.c.Attest(ctx, cut.ID(), cutPol)
	if err != nil {
		t.Fatal(err)
	}
	defer as.CloseIdleConnections()
	s, err := as.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, e := range s.Events {
		kinds = append(kinds, e.Kind)
	}
	i := slices.Index(kinds, node.EventRunInterrupted)
	if s.State != cloisterv1.SessionState_SESSION_STATE_FINISHED || i < 0 || i+1 >= len(kinds) || kinds[i+1] != node.EventRunRestarted {
		t.Fatalf("after the interrupted stop: %v %v", s.State, kinds)
	}
	if got, err := as.Result(ctx, p.dave, "sum"); err != nil || string(got) != spinSum {
		t.Fatalf("interrupted run's result: %q %v", got, err)
	}
	n3.stop(t, time.Minute)
}

// --log-format json writes one JSON object a line.
func TestLogFormat(t *testing.T) {
	var b bytes.Buffer
	l := logFlags{level: "info", format: "json"}
	log, err := l.logger("node", &b)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("node listening", "url", "https://127.0.0.1:1")
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["msg"] != "node listening" || m["level"] != "INFO" {
		t.Fatalf("%v %s", err, b.String())
	}
	if code, _, errb := runCLI(t, "node", "--data", t.TempDir(), "--log-format", "xml"); code != 2 || !strings.Contains(errb, "--log-format") {
		t.Fatalf("--log-format xml: %d %s", code, errb)
	}
}

// startValidator runs 'cloister ledger start --home home' in-process until
// the returned stop is called (which waits for a clean return), and waits
// until its API at url has committed a block.
func startValidator(t *testing.T, home, url string) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedBuffer{}
	cmd := newLedgerCmd()
	cmd.SetArgs([]string{"start", "--home", home})
	cmd.SetErr(logs)
	cmd.SetOut(logs)
	done := make(chan error, 1)
	go func() { done <- cmd.ExecuteContext(ctx) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ledger start returned %v\n%s", err, logs.String())
			}
		case <-time.After(30 * time.Second):
			t.Errorf("ledger start did not stop")
		}
	}
	t.Cleanup(stop)
	c, err := lclient.New(url)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := c.Status(ctx)
		if err == nil && st.Height > 0 {
			return stop
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
}

// A validator's home backed up once it stopped and restored onto a fresh
// directory carries on the same chain: what a client verified before is
// consistent with what the restored validator serves, every entry is
// there, and new ones are appended after them.
func TestValidatorBackupRestore(t *testing.T) {
	dir := t.TempDir()
	code, out, errb := runCLI(t, "ledger", "testnet", "--validators", "1", "--out", dir)
	if code != 0 {
		t.Fatalf("testnet: %d %s", code, errb)
	}
	home, url, _ := strings.Cut(strings.TrimSpace(out), " ")
	stop := startValidator(t, home, url)
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "alice.key")
	if err := k.Save(keyFile); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if code, _, errb := runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--kind", "note", "--body", `{"n":`+string(rune('0'+i))+`}`); code != 0 {
			t.Fatalf("append: %s", errb)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	lc, err := lclient.New(url)
	if err != nil {
		t.Fatal(err)
	}
	pins := filepath.Join(dir, "pins.json")
	if _, err := lc.Verify(ctx, pins, nil); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "v0.tar")
	if code, _, errb := runCLI(t, "backup", "create", "--data", home, "--out", archive); code != 1 || !strings.Contains(errb, "in use") {
		t.Fatalf("backup of a running validator: %d %s", code, errb)
	}
	stop()
	if code, out, errb := runCLI(t, "backup", "create", "--data", home, "--out", archive, "--json"); code != 0 || !strings.Contains(out, `"kind":"validator"`) {
		t.Fatalf("backup: %d %s %s", code, out, errb)
	}
	fresh := filepath.Join(t.TempDir(), "v0")
	if code, _, errb := runCLI(t, "backup", "restore", "--from", archive, "--data", fresh); code != 0 {
		t.Fatalf("restore: %d %s", code, errb)
	}
	if err := os.RemoveAll(home); err != nil {
		t.Fatal(err)
	}
	startValidator(t, fresh, url)
	if _, err := lc.Verify(ctx, pins, nil); err != nil {
		t.Fatalf("the restored validator against what was verified before: %v", err)
	}
	for i := range uint64(3) {
		if _, err := lc.Get(ctx, i); err != nil {
			t.Fatalf("entry %d after the restore: %v", i, err)
		}
	}
	if code, out, errb := runCLI(t, "ledger", "append", "--ledger", url, "--key", keyFile, "--kind", "note", "--body", `{"n":3}`); code != 0 || out != "3\n" {
		t.Fatalf("append after the restore: %d %q %s", code, out, errb)
	}
}
