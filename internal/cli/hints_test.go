package cli

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite internal/cli/testdata/golden from the messages the tests see")

// Each message a new user met that pointed the wrong way has a golden
// file in testdata/golden: the exit status and standard error of the
// command, with what changes from run to run (temporary paths, ports,
// keys, session ids) replaced by placeholders. A change of wording shows
// up as a diff in review; -update-golden rewrites the files.

var goldenNoise = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:PORT"},
	{regexp.MustCompile(`ed25519:[A-Za-z0-9+/]{10}… \(fingerprint [0-9a-f]{8}\)`), "ed25519:KEY"},
	{regexp.MustCompile(`ed25519:[A-Za-z0-9+/]{43}=`), "ed25519:KEY"},
	{regexp.MustCompile(`\b[0-9a-f]{32}\b`), "SESSION"},
}

// golden compares "exit CODE\n" + stderr, with tmp replaced by $TMP and
// the noise above by placeholders, with testdata/golden/NAME.txt.
func golden(t *testing.T, name string, code int, stderr string, tmp ...string) {
	t.Helper()
	got := fmt.Sprintf("exit %d\n%s", code, stderr)
	for _, d := range tmp {
		got = strings.ReplaceAll(got, d, "$TMP")
	}
	for _, n := range goldenNoise {
		got = n.re.ReplaceAllString(got, n.with)
	}
	path := filepath.Join("testdata", "golden", name+".txt")
	if *updateGolden {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./internal/cli -run %s -update-golden to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("%s: the message changed; if that is meant, run with -update-golden.\n--- got\n%s--- want\n%s", path, got, want)
	}
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// TestGoldenPublicKeyAsKey: a public key file given as --key is told it
// holds public keys only — not, first, to chmod 600 it.
func TestGoldenPublicKeyAsKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mustCLI(t, "key", "new", "--out", filepath.Join(dir, "alice.key"))
	pub := mustCLI(t, "key", "public", filepath.Join(dir, "alice.key"))
	os.WriteFile(filepath.Join(dir, "alice.pub"), []byte(pub), 0o644)
	os.WriteFile(filepath.Join(dir, "in.csv"), []byte("x"), 0o644)
	code, _, stderr := runCLI(t, "session", "upload", "--node", "https://"+closedPort(t), "--session", strings.Repeat("a", 32),
		"--policy", "../../examples/policies/psi-sum.json", "--key", filepath.Join(dir, "alice.pub"), "--input", "customers.csv="+filepath.Join(dir, "in.csv"))
	golden(t, "public-key-as-key", code, stderr, dir)
	// The same file as JSON, and a real key file with a loose mode, keep
	// their own messages.
	js := mustCLI(t, "key", "public", filepath.Join(dir, "alice.key"), "--json")
	os.WriteFile(filepath.Join(dir, "alice.pub.json"), []byte(js), 0o600)
	if code, _, stderr := runCLI(t, "ledger", "append", "--ledger", "http://"+closedPort(t), "--key", filepath.Join(dir, "alice.pub.json"), "--body", "{}"); code != 2 || !strings.Contains(stderr, "holds public keys only") {
		t.Errorf("JSON public key as --key: exit %d, %q", code, stderr)
	}
	os.Chmod(filepath.Join(dir, "alice.key"), 0o644)
	if code, _, stderr := runCLI(t, "key", "public", filepath.Join(dir, "alice.key")); code != 1 || !strings.Contains(stderr, "chmod 600") {
		t.Errorf("a key file others can read: exit %d, %q", code, stderr)
	}
}

// TestGoldenNodeNotRunning: a node that does not answer is named, with
// how to start one — not a raw "connection refused".
func TestGoldenNodeNotRunning(t *testing.T) {
	t.Parallel()
	code, _, stderr := runCLI(t, "session", "create", "--node", "https://"+closedPort(t), "--policy", "../../examples/policies/psi-sum.json")
	golden(t, "node-not-running", code, stderr)
}

// TestGoldenLedgerBareHostPort: a ledger given as HOST:PORT is plain
// HTTP, as --node accepts HOST:PORT; one that does not answer is named.
func TestGoldenLedgerBareHostPort(t *testing.T) {
	t.Parallel()
	code, _, stderr := runCLI(t, "ledger", "get", "0", "--ledger", closedPort(t))
	golden(t, "ledger-bare-host-port", code, stderr)
}

// TestGoldenWrongPlatformKey: a node the policy does not list says which
// key it has and where to compare it.
func TestGoldenWrongPlatformKey(t *testing.T) {
	url, dir := startSessionNode(t)
	mustCLI(t, "key", "new", "--out", filepath.Join(dir, "other.key"))
	mustCLI(t, "key", "new", "--out", filepath.Join(dir, "alice.key"))
	mustCLI(t, "policy", "new", "--out", filepath.Join(dir, "p.json"), "--platform-key", filepath.Join(dir, "other.key"),
		"--principal", filepath.Join(dir, "alice.key"), "--program", "alice:sum.wasm=sha256:"+strings.Repeat("ab", 32), "--output", "alice:out")
	code, _, stderr := runCLI(t, "session", "create", "--node", url, "--policy", filepath.Join(dir, "p.json"))
	golden(t, "wrong-platform-key", code, stderr, dir)
}

// TestGoldenResultWaitExpired: a result not ready after --wait says what
// the session lacks, and does not suggest --wait.
func TestGoldenResultWaitExpired(t *testing.T) {
	url, dir := startSessionNode(t)
	at := func(n string) string { return filepath.Join(dir, n) }
	for _, p := range []string{"alice", "bob", "dave"} {
		mustCLI(t, "key", "new", "--out", at(p+".key"))
	}
	mustCLI(t, "policy", "new", "--out", at("p.json"), "--node-data", at("node-data"),
		"--principal", at("alice.key"), "--principal", at("bob.key"), "--principal", at("dave.key"),
		"--program", "alice:sum.wasm=../../node/testdata/sum.wasm", "--input", "bob:a", "--input", "bob:b", "--output", "dave:sum")
	id := strings.TrimSpace(mustCLI(t, "session", "create", "--node", url, "--policy", at("p.json")))
	sess := func(op string, extra ...string) []string {
		return append([]string{"session", op, "--node", url, "--session", id, "--policy", at("p.json")}, extra...)
	}
	mustCLI(t, sess("upload", "--key", at("alice.key"), "--program", "sum.wasm=../../node/testdata/sum.wasm")...)
	code, _, stderr := runCLI(t, sess("result", "--key", at("dave.key"), "--output", "sum", "--out", at("sum"), "--wait", "2s")...)
	golden(t, "result-wait-expired", code, stderr, dir)
	code, _, stderr = runCLI(t, sess("result", "--key", at("dave.key"), "--output", "sum", "--out", at("sum"))...)
	golden(t, "result-not-ready", code, stderr, dir)
}

// TestGoldenAttestVerifyNoTrustRoot: software evidence verified with no
// key pinned says how to pin one, not "not among the 0 pinned keys".
func TestGoldenAttestVerifyNoTrustRoot(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mustCLI(t, "key", "new", "--out", filepath.Join(dir, "attester.key"))
	mustCLI(t, "attest", "quote", "--class", "software", "--key", filepath.Join(dir, "attester.key"), "--report-data", "00", "--out", filepath.Join(dir, "ev.json"))
	code, _, stderr := runCLI(t, "attest", "verify", filepath.Join(dir, "ev.json"))
	golden(t, "attest-verify-no-trust-root", code, stderr, dir)
}

// TestGoldenVerifyIndexPastEnd: an index the log does not hold is told
// so at once, not "try again shortly".
func TestGoldenVerifyIndexPastEnd(t *testing.T) {
	url := ledgerTestnet(t, "golden-index")
	dir := t.TempDir()
	mustCLI(t, "key", "new", "--out", filepath.Join(dir, "alice.key"))
	mustCLI(t, "ledger", "append", "--ledger", url, "--key", filepath.Join(dir, "alice.key"), "--body", `{"text":"hello"}`)
	// Told before the (long) wait asked for is over: not a speed bound.
	start := time.Now()
	code, _, stderr := runCLI(t, "ledger", "verify", "--ledger", url, "--index", "7", "--wait", "2m", "--state", filepath.Join(dir, "st.json"))
	if d := time.Since(start); d >= 2*time.Minute {
		t.Errorf("verify of a missing entry took %v: it should not wait", d)
	}
	golden(t, "verify-index-past-end", code, stderr, dir)
	code, _, stderr = runCLI(t, "ledger", "proof", "--ledger", url, "7")
	golden(t, "proof-index-past-end", code, stderr, dir)
}

// TestGoldenAppendNoQuorum: an append to a ledger that has lost its
// quorum says that too few validators are up, and how many it needs.
func TestGoldenAppendNoQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four validators")
	}
	dir := t.TempDir()
	vals, err := ledger.GenerateTestnet(filepath.Join(dir, "net"), 4, ledger.TestnetOptions{ChainID: "golden-quorum"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	running := make([]*ledger.Validator, 4)
	for i, v := range vals {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		running[i], err = ledger.StartValidator(sctx, v.Home, ledger.StartOptions{})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, v := range running {
			if v != nil {
				v.Close()
			}
		}
	})
	c, _ := lclient.New(vals[0].APIURL)
	deadline := time.Now().Add(time.Minute)
	for {
		if st, err := c.Status(ctx); err == nil && st.Height > 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the testnet made no block")
		}
		time.Sleep(100 * time.Millisecond)
	}
	mustCLI(t, "key", "new", "--out", filepath.Join(dir, "alice.key"))
	mustCLI(t, "ledger", "append", "--ledger", vals[0].APIURL, "--key", filepath.Join(dir, "alice.key"), "--body", `{"n":1}`)
	for _, i := range []int{3, 2} {
		running[i].Close()
		running[i] = nil
	}
	code, _, stderr := runCLI(t, "ledger", "append", "--ledger", vals[0].APIURL, "--key", filepath.Join(dir, "alice.key"), "--body", `{"n":2}`, "--wait", "9s")
	stderr = regexp.MustCompile(`no block for \d+s`).ReplaceAllString(stderr, "no block for Ns")
	golden(t, "append-no-quorum", code, stderr, dir)
}

// TestGoldenRunWarning: 'cloister run' warns only of protections that
// are truly missing, and never speaks of a node.
func TestGoldenRunWarning(t *testing.T) {
	t.Parallel()
	rep := &isolate.Report{
		Protections: []string{"netns", "setupcaps", "worker"},
		Missing:     map[string]string{"cgroup": "no memory controller", "userns": "not created, by design"},
	}
	golden(t, "run-weaker-isolation", 0, weakerIsolation(rep)+"\n")
	rep.Missing = map[string]string{"userns": "not created, by design"}
	if w := weakerIsolation(rep); w != "" {
		t.Errorf("a user namespace left out for setupcaps draws %q", w)
	}
}

// TestGoldenProgressLine: the shape of a progress report.
func TestGoldenProgressLine(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	for _, l := range []struct {
		what           string
		elapsed, limit time.Duration
		detail         string
	}{
		{"the ledger to commit the entry", 4200 * time.Millisecond, 30 * time.Second, ""},
		{"the ledger to commit the entry", 9 * time.Second, 30 * time.Second, "no block for 7s: too few validators may be up"},
		{"the result of session SESSION", 75 * time.Second, 2 * time.Minute, "missing input purchases.csv from carol"},
		{"the local network to start", 3 * time.Second, 0, "node (https://127.0.0.1:7443)"},
	} {
		fmt.Fprintln(&b, progressLine(l.what, l.elapsed, l.limit, l.detail))
	}
	golden(t, "progress-lines", 0, b.String())
}

// TestGoldenNodePortInUse: a node whose port is taken says so before it
// makes anything in its data directory.
func TestGoldenNodePortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := filepath.Join(t.TempDir(), "node-data")
	code, _, stderr := runCLI(t, "node", "--listen", l.Addr().String(), "--data", dir, "--no-ledger")
	stderr = regexp.MustCompile(`(?m)^time=.*\n`).ReplaceAllString(stderr, "") // the node's log
	golden(t, "node-port-in-use", code, stderr, dir)
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("%s was made by a node that could not listen", dir)
	}
}
