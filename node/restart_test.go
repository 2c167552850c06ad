package node_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/node"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sumPolicy is a policy for testdata/sum.wasm or spin.wasm: alice
// provides the program, bob input a, carol input b, dave reads sum.
func (s *scenario) sumPolicy(t testing.TB, platformKey, program string, wasm []byte) []byte {
	return s.policyDoc(t, platformKey, func(m map[string]any) {
		m["name"] = "sum"
		m["programs"] = []any{map[string]any{"name": program, "sha256": sha256hex(wasm), "provider": "alice"}}
		m["inputs"] = []any{
			map[string]any{"name": "a", "provider": "bob"},
			map[string]any{"name": "b", "provider": "carol"},
		}
		m["outputs"] = []any{map[string]any{"name": "sum", "readers": []string{"dave"}}}
		m["limits"] = map[string]any{"memory": "16MiB", "timeout": "60s", "max_output": "4KiB"}
	})
}

func (s *scenario) provisionSum(t testing.TB, as *client.AttestedSession, program string, wasm []byte) {
	t.Helper()
	ctx := context.Background()
	if _, err := as.UploadProgram(ctx, s.alice.key, program, wasm); err != nil {
		t.Fatal(err)
	}
	if _, err := as.UploadInput(ctx, s.bob.key, "a", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if _, err := as.UploadInput(ctx, s.carol.key, "b", []byte("world")); err != nil {
		t.Fatal(err)
	}
}

func byteSum(parts ...string) string {
	n := 0
	for _, p := range parts {
		for _, c := range []byte(p) {
			n += int(c)
		}
	}
	return strconv.Itoa(n) + "\n"
}

func TestSumProgram(t *testing.T) {
	s := newScenario(t)
	tn := startNode(t, filepath.Join(t.TempDir(), "node"), nil)
	wasm := readTestdata(t, "sum.wasm")
	doc := s.sumPolicy(t, tn.platformKey(), "sum.wasm", wasm)
	c := dial(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	as := createAttested(ctx, t, c, doc)
	s.provisionSum(t, as, "sum.wasm", wasm)
	got, err := as.Result(ctx, s.dave.key, "sum")
	if err != nil {
		t.Fatal(err)
	}
	if want := byteSum("hello", "world"); string(got) != want {
		t.Fatalf("sum = %q, want %q", got, want)
	}
}

// A finished result not yet fetched survives a node restart, and so do the
// session's keys: clients attest again and fetch it.
func TestRestartKeepsUnfetchedResult(t *testing.T) {
	s := newScenario(t)
	dir := filepath.Join(t.TempDir(), "node")
	tn := startNode(t, dir, nil)
	doc := s.policyDoc(t, tn.platformKey(), nil)
	pol := mustParse(t, doc)
	c := dial(t, tn)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	as, err := c.Attest(ctx, id, pol)
	if err != nil {
		t.Fatal(err)
	}
	s.provision(t, as)
	if st, err := as.Wait(ctx); err != nil || st.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
		t.Fatalf("wait: %v %v", st, err)
	}
	tlsKey := as.TLSKeyHash()
	as.CloseIdleConnections()
	tn.stop()

	tn2 := startNode(t, dir, nil)
	c2 := dial(t, tn2)
	as2, err := c2.Attest(ctx, id, pol)
	if err != nil {
		t.Fatalf("attest after restart: %v", err)
	}
	defer as2.CloseIdleConnections()
	if as2.TLSKeyHash() != tlsKey {
		t.Fatalf("session TLS key changed across the restart: %s, was %s", as2.TLSKeyHash(), tlsKey)
	}
	got, err := as2.Result(ctx, s.dave.key, "result.json")
	if err != nil {
		t.Fatalf("result after restart: %v", err)
	}
	if want := s.output(t, "result.json"); !bytes.Equal(got, want) {
		t.Fatalf("result.json = %q, want %q", got, want)
	}
}

// interruptedSpin starts a node in dir, provisions a session of spin.wasm
// (a run of seconds) on it and stops the node while the run is under way.
// It returns the session's id and policy document.
func interruptedSpin(ctx context.Context, t *testing.T, s *scenario, dir string) (id string, doc []byte) {
	t.Helper()
	tn := startNode(t, dir, nil)
	wasm := readTestdata(t, "spin.wasm")
	doc = s.sumPolicy(t, tn.platformKey(), "spin.wasm", wasm)
	as := createAttested(ctx, t, dial(t, tn), doc)
	s.provisionSum(t, as, "spin.wasm", wasm)
	st, err := as.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != cloisterv1.SessionState_SESSION_STATE_RUNNING {
		t.Fatalf("state %v right after the last upload, want running (spin.wasm runs for seconds)", st.State)
	}
	as.CloseIdleConnections()
	tn.stop()
	return as.ID(), doc
}

// A run cut short by a node stop is run again at the next start, from the
// program and inputs still sealed on disk.
func TestRestartRerunsInterruptedRun(t *testing.T) {
	s := newScenario(t)
	dir := filepath.Join(t.TempDir(), "node")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	id, doc := interruptedSpin(ctx, t, s, dir)

	tn2 := startNode(t, dir, nil)
	c2 := dial(t, tn2)
	as2, err := c2.Attest(ctx, id, mustParse(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	defer as2.CloseIdleConnections()
	st, err := as2.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
		t.Fatalf("after restart: %v (%s)", st.State, st.Reason)
	}
	if !slices.ContainsFunc(st.Events, func(e *cloisterv1.Event) bool { return e.Kind == node.EventRunRestarted }) {
		t.Fatalf("no %s event in %v", node.EventRunRestarted, st.Events)
	}
	got, err := as2.Result(ctx, s.dave.key, "sum")
	if err != nil {
		t.Fatal(err)
	}
	var x uint32
	for i := uint32(0); i < 1000000000; i++ {
		x += i
	}
	if want := strconv.FormatUint(uint64(x), 10) + "\n"; string(got) != want {
		t.Fatalf("sum = %q, want %q", got, want)
	}
}

// Nothing a session keeps at rest is plaintext, and close erases it.
func TestStateSealedAtRestAndErasedOnClose(t *testing.T) {
	s := newScenario(t)
	tn, c, as, _ := setup(t, s)
	ctx := context.Background()
	secret := []byte("id\ncustomer-with-a-very-recognisable-name-4f2a\n")
	if _, err := as.UploadInput(ctx, s.bob.key, "customers.csv", secret); err != nil {
		t.Fatal(err)
	}
	// The session's log, and its directory if it has one (blobs).
	logPath := filepath.Join(tn.dir, "sessions", as.ID()+".log")
	paths := []string{logPath}
	sdir := filepath.Join(tn.dir, "sessions", as.ID())
	files, err := os.ReadDir(sdir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, f := range files {
		paths = append(paths, filepath.Join(sdir, f.Name()))
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, needle := range [][]byte{[]byte("recognisable-name-4f2a"), []byte(`"principals"`), []byte("psi-sum.wasm")} {
			if bytes.Contains(b, needle) {
				t.Fatalf("%s holds %q in plaintext", p, needle)
			}
		}
	}
	if err := as.Close(ctx, s.carol.key); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{logPath, sdir} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s after close: %v", p, err)
		}
	}
	var ts map[string]any
	b, err := os.ReadFile(filepath.Join(tn.dir, "sessions", "closed.log"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &ts); err != nil || ts["by"] != "carol" || ts["id"] != as.ID() {
		t.Fatalf("tombstone %s: %v", b, err)
	}
	// The erased session can no longer be reached, and says why.
	if _, err := c.Attest(ctx, as.ID(), mustParse(t, s.policyDoc(t, tn.platformKey(), nil))); err == nil {
		t.Fatal("attested a closed session")
	}
	st, err := c.Status(ctx, as.ID(), 0)
	if err != nil || st.State != cloisterv1.SessionState_SESSION_STATE_CLOSED {
		t.Fatalf("status after close: %v %v", st, err)
	}
}

// A run cut short by a node stop is not run again if the policy expired
// meanwhile: nobody could fetch its result, and an expired policy allows
// nothing more. The session fails, saying why.
func TestRestartAfterExpiryDoesNotRerun(t *testing.T) {
	s := newScenario(t)
	dir := filepath.Join(t.TempDir(), "node")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, _ := interruptedSpin(ctx, t, s, dir)

	later := func() time.Time { return time.Now().Add(2 * time.Hour) } // the policy expires in one
	tn2 := startNodeClock(t, dir, nil, later)
	st, err := dial(t, tn2).Status(ctx, id, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != cloisterv1.SessionState_SESSION_STATE_FAILED || !strings.Contains(st.Reason, "expired") {
		t.Fatalf("after a restart past expiry: %v (%s), want failed naming the expiry", st.State, st.Reason)
	}
	if !slices.ContainsFunc(st.Events, func(e *cloisterv1.Event) bool { return e.Kind == node.EventRunRestarted }) {
		t.Fatalf("no %s event in %v", node.EventRunRestarted, st.Events)
	}
}

// A policy asking for replicas is refused by a node asked for a single
// session: its sessions join a replica set the client chooses.
func TestReplicatedPolicyNeedsASet(t *testing.T) {
	createRefused(t, func(m map[string]any) {
		m["inputs"] = []any{map[string]any{"name": "a", "provider": "bob"}}
		m["outputs"] = []any{map[string]any{"name": "sum", "readers": []string{"dave"}}}
		m["deterministic"], m["replicas"] = true, 3
	}, "joins a replica set of 3 nodes of distinct organisations")
}
