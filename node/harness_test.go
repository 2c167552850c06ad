package node_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
)

// runtime is shared by every node in this test binary: one compilation
// cache, one warm pool.
var runtime *isolate.Runtime

func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	dir, err := os.MkdirTemp("", "cloister-node-test-")
	if err != nil {
		panic(err)
	}
	runtime, err = isolate.New(context.Background(), isolate.Options{DataDir: dir, WarmWorkers: 1})
	if err != nil {
		panic(err)
	}
	code := m.Run()
	runtime.Close()
	os.RemoveAll(dir)
	testbin.Cleanup()
	os.Exit(code)
}

// party is one principal with its key.
type party struct {
	id  string
	key *keys.PrivateKey
}

func newParty(t testing.TB, id string) party {
	t.Helper()
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return party{id: id, key: k}
}

// scenario is the psi-sum computation: alice provides the program, bob the
// customers, carol the purchases, dave reads the result.
type scenario struct {
	alice, bob, carol, dave party
	prog                    *examples.Program
	doc                     map[string]any
}

func newScenario(t testing.TB) *scenario {
	t.Helper()
	prog, err := examples.Lookup("psi-sum")
	if err != nil {
		t.Fatal(err)
	}
	return &scenario{
		alice: newParty(t, "alice"), bob: newParty(t, "bob"), carol: newParty(t, "carol"), dave: newParty(t, "dave"),
		prog: prog,
	}
}

func principal(p party, roles ...string) map[string]any {
	pub := p.key.Public()
	return map[string]any{"id": p.id, "signing_key": pub.SigningString(), "sealing_key": pub.SealingString(), "roles": roles}
}

// policyDoc builds the scenario's policy for a node with platformKey;
// mutate may change any field before it is encoded.
func (s *scenario) policyDoc(t testing.TB, platformKey string, mutate func(map[string]any)) []byte {
	t.Helper()
	doc := map[string]any{
		"version": 1,
		"name":    "psi-sum",
		"principals": []any{
			principal(s.alice, "program-provider"),
			principal(s.bob, "data-provider"),
			principal(s.carol, "data-provider"),
			principal(s.dave, "result-reader"),
		},
		"programs": []any{map[string]any{"name": "psi-sum.wasm", "sha256": sha256hex(s.prog.Wasm), "provider": "alice"}},
		"inputs": []any{
			map[string]any{"name": "customers.csv", "provider": "bob"},
			map[string]any{"name": "purchases.csv", "provider": "carol"},
		},
		"outputs":       []any{map[string]any{"name": "result.json", "readers": []string{"dave"}}},
		"isolates":      []any{map[string]any{"class": "software", "platform_keys": []string{platformKey}}},
		"limits":        map[string]any{"memory": "128MiB", "timeout": "2m", "max_output": "1MiB"},
		"deterministic": true,
		"expires":       time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
	}
	if mutate != nil {
		mutate(doc)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (s *scenario) input(t testing.TB, name string) []byte {
	for _, f := range s.prog.Inputs {
		if f.Name == name {
			return f.Data
		}
	}
	t.Fatalf("psi-sum has no sample input %q", name)
	return nil
}

func (s *scenario) output(t testing.TB, name string) []byte {
	for _, f := range s.prog.Outputs {
		if f.Name == name {
			return f.Data
		}
	}
	t.Fatalf("psi-sum has no sample output %q", name)
	return nil
}

// testNode is a node serving on loopback TLS.
type testNode struct {
	*node.Node
	dir string
	url string
	ln  net.Listener
	srv *http.Server
}

// testOptions are the options of a test node over dir: the shared
// runtime, no fsync, warnings and errors logged to the test.
func testOptions(t testing.TB, dir string) node.Options {
	return node.Options{DataDir: dir, Runner: runtime, NoSync: true,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))}
}

// startNode opens a node over dir and serves it on 127.0.0.1; wrap, if
// given, sits between TLS and the node's handler (a hostile operator).
func startNode(t testing.TB, dir string, wrap func(http.Handler) http.Handler) *testNode {
	return startNodeClock(t, dir, wrap, nil)
}

// startNodeClock is startNode with the node's clock set to now.
func startNodeClock(t testing.TB, dir string, wrap func(http.Handler) http.Handler, now func() time.Time) *testNode {
	t.Helper()
	opts := testOptions(t, dir)
	opts.Now = now
	return startNodeOpts(t, opts, wrap)
}

// startNodeOpts is startNode with the node's options.
func startNodeOpts(t testing.TB, opts node.Options, wrap func(http.Handler) http.Handler) *testNode {
	t.Helper()
	dir := opts.DataDir
	n, err := node.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := n.Handler()
	if wrap != nil {
		h = wrap(h)
	}
	srv := &http.Server{Handler: h, TLSConfig: n.TLSConfig()}
	go srv.Serve(tls.NewListener(ln, srv.TLSConfig))
	tn := &testNode{Node: n, dir: dir, url: "https://" + ln.Addr().String(), ln: ln, srv: srv}
	t.Cleanup(tn.stop)
	return tn
}

func (tn *testNode) stop() {
	if tn.srv != nil {
		tn.srv.Close()
	}
	tn.Node.Close()
}

func (tn *testNode) platformKey() string {
	return keys.FormatSigningKey(tn.PlatformKey())
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

func dial(t testing.TB, tn *testNode) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), tn.url, client.WithPlatformKeys(tn.PlatformKey()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func mustParse(t testing.TB, doc []byte) *policy.Policy {
	t.Helper()
	p, err := policy.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// setup starts a node, creates a session for the scenario's policy and
// attests it.
func setup(t testing.TB, s *scenario) (*testNode, *client.Client, *client.AttestedSession, []byte) {
	t.Helper()
	tn, doc, c := s.nodeWithPolicy(t, nil)
	return tn, c, createAttested(context.Background(), t, c, doc), doc
}

// nodeWithPolicy starts a node in a directory of its own (its handler
// wrapped by wrap, if not nil) and returns it, the scenario's policy for it
// and a client of it.
func (s *scenario) nodeWithPolicy(t testing.TB, wrap func(http.Handler) http.Handler) (*testNode, []byte, *client.Client) {
	t.Helper()
	tn := startNode(t, filepath.Join(t.TempDir(), "node"), wrap)
	return tn, s.policyDoc(t, tn.platformKey(), nil), dial(t, tn)
}

// createAttested creates a session of doc on c's node and attests it.
func createAttested(ctx context.Context, t testing.TB, c *client.Client, doc []byte) *client.AttestedSession {
	t.Helper()
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	as, err := c.Attest(ctx, id, mustParse(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.CloseIdleConnections)
	return as
}

// warmPsiSum compiles psi-sum into the shared runtime's cache, once per
// test binary. The first compile of the 3.3 MiB module takes about 2 s on
// a quiet machine but one to several minutes under the race detector on a
// loaded two-core one (the compiler runs instrumented): inside a session it
// would count against the policy's run limit and fail the run. Here it is
// bounded by its own generous deadline instead.
func (s *scenario) warmPsiSum(t testing.TB) {
	t.Helper()
	warmOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		cfg := &isolate.Config{Module: s.prog.Wasm, Name: "psi-sum.wasm", Memory: 128 << 20, MaxOutput: 1 << 20,
			Deterministic: true, Timeout: 15 * time.Minute}
		for _, f := range s.prog.Inputs {
			cfg.Inputs = append(cfg.Inputs, isolate.Input{Name: f.Name, Data: f.Data})
		}
		start := time.Now()
		res, err := runtime.Run(ctx, cfg)
		switch {
		case err != nil:
			warmErr = fmt.Errorf("compiling psi-sum: %w", err)
		case res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0:
			warmErr = fmt.Errorf("psi-sum warm-up run: %s, exit %d: %s", res.Report.Outcome, res.Report.ExitCode, res.Report.Error)
		}
		t.Logf("psi-sum compiled and run once in %s", time.Since(start).Round(time.Millisecond))
	})
	if warmErr != nil {
		t.Fatal(warmErr)
	}
}

var (
	warmOnce sync.Once
	warmErr  error
)

// provision uploads the program and both inputs (after warmPsiSum).
func (s *scenario) provision(t testing.TB, as *client.AttestedSession) {
	t.Helper()
	s.warmPsiSum(t)
	ctx := context.Background()
	if _, err := as.UploadProgram(ctx, s.alice.key, "psi-sum.wasm", s.prog.Wasm); err != nil {
		t.Fatal(err)
	}
	if _, err := as.UploadInput(ctx, s.bob.key, "customers.csv", s.input(t, "customers.csv")); err != nil {
		t.Fatal(err)
	}
	if _, err := as.UploadInput(ctx, s.carol.key, "purchases.csv", s.input(t, "purchases.csv")); err != nil {
		t.Fatal(err)
	}
}

func asError[T error](err error) (T, bool) {
	var target T
	ok := errors.As(err, &target)
	return target, ok
}
