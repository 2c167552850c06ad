package node_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/keys"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
)

// The crash test runs 'cloister node' as a process of its own, built
// without the race detector, and kills it with SIGKILL at random points
// while clients create sessions, upload, run and fetch results and the
// node records every step on its embedded ledger. After each kill it
// restarts the node on the same data directory and checks what the
// clients were told against what the node and its ledger say.
//
// SIGKILL leaves the kernel's page cache intact, so this checks crash
// consistency (every step the node acknowledged is whole, nothing
// half-written is served), not durability across a power loss, which
// rests on the fsyncs the store makes before it acknowledges.

// buildCloister builds cmd/cloister (without -race) once per test binary.
func buildCloister(t *testing.T) string {
	t.Helper()
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// startNodeProcess starts the node over dir and waits until it serves.
func startNodeProcess(t *testing.T, bin, dir string) *testbin.Node {
	t.Helper()
	// One address creates every session here: its creation rate is not
	// what this test is about.
	np, err := testbin.StartNode(bin, 2*time.Minute, "--data", dir, "--listen", "127.0.0.1:0", "--ledger-listen", "127.0.0.1:0",
		"--warm-workers", "1", "--log-level", "info", "--create-rate-per-creator", "1000", "--create-rate", "1000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(np.Kill)
	return np
}

// acked is what the node acknowledged to the clients, per session.
type acked struct {
	mu       sync.Mutex
	sessions map[string]*ackedSession
	attempts int // creates sent, acknowledged or not
}

type ackedSession struct {
	uploads   map[string]string // name → envelope SHA-256 the node returned
	resultSHA string            // SHA-256 of the result envelope served
	result    []byte
	closing   bool // a close was sent
	closed    bool // a close was acknowledged
}

func (a *acked) session(id string) *ackedSession {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := a.sessions[id]
	if s == nil {
		s = &ackedSession{uploads: map[string]string{}}
		a.sessions[id] = s
	}
	return s
}

func (a *acked) update(f func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f()
}

// crashRun is one test's parties and policy.
type crashRun struct {
	s    *scenario
	wasm []byte
	doc  []byte
	pol  *policy.Policy
	ack  *acked
}

// flow runs sessions until ctx ends, noting every acknowledgement.
func (cr *crashRun) flow(ctx context.Context, url string, platform ed25519.PublicKey, rng *rand.Rand) {
	c, err := client.Dial(ctx, url, client.WithPlatformKeys(platform))
	if err != nil {
		return
	}
	defer c.Close()
	for ctx.Err() == nil {
		cr.ack.update(func() { cr.ack.attempts++ })
		id, err := c.CreateSession(ctx, cr.doc)
		if err != nil {
			return
		}
		cr.ack.session(id)
		as, err := c.Attest(ctx, id, cr.pol)
		if err != nil {
			return
		}
		steps := []struct {
			program bool
			key     *keys.PrivateKey
			name    string
			data    []byte
		}{{true, cr.s.alice.key, "sum.wasm", cr.wasm}, {false, cr.s.bob.key, "a", []byte("hello")}, {false, cr.s.carol.key, "b", []byte("world")}}
		for _, st := range steps {
			var up *client.Upload
			if st.program {
				up, err = as.UploadProgram(ctx, st.key, st.name, st.data)
			} else {
				up, err = as.UploadInput(ctx, st.key, st.name, st.data)
			}
			if err != nil {
				as.CloseIdleConnections()
				return
			}
			cr.ack.update(func() { cr.ack.sessions[id].uploads[st.name] = up.EnvelopeSHA256 })
		}
		env, err := fetchEnvelope(ctx, url, id, as.PolicyHash(), cr.s.dave, 30*time.Second)
		if err != nil {
			as.CloseIdleConnections()
			return
		}
		pt, err := cr.s.dave.key.Open(env, protocol.SealInfo(protocol.KindOutput, id, "sum", "dave"), protocol.SealAAD(as.PolicyHash()))
		if err != nil {
			as.CloseIdleConnections()
			return
		}
		sum := sha256.Sum256(env)
		cr.ack.update(func() { cr.ack.sessions[id].resultSHA, cr.ack.sessions[id].result = hex.EncodeToString(sum[:]), pt })
		if rng.IntN(2) == 0 {
			cr.ack.update(func() { cr.ack.sessions[id].closing = true })
			if err := as.Close(ctx, cr.s.carol.key); err != nil {
				as.CloseIdleConnections()
				return
			}
			cr.ack.update(func() { cr.ack.sessions[id].closed = true })
		}
		as.CloseIdleConnections()
	}
}

// fetchEnvelope fetches the sealed output "sum" as dave, without opening
// it: the test compares envelopes, which a rerun would change (HPKE is
// randomised) even where the plaintext is the same.
func fetchEnvelope(ctx context.Context, url, id string, hash [32]byte, dave party, wait time.Duration) ([]byte, error) {
	raw := rawSessionAt(url, id, hash)
	defer raw.close()
	auth := raw.signWith(dave.key, "dave", protocol.OpGetResult, "sum", nil)
	resp, err := raw.svc.GetResult(ctx, connect.NewRequest(&cloisterv1.GetResultRequest{SessionId: id, Output: "sum", WaitMs: wait.Milliseconds(), Auth: auth}))
	if err != nil {
		return nil, err
	}
	return resp.Msg.Envelope, nil
}

// verify checks, after a restart, that every acknowledged step is there:
// no session lost, every upload with the envelope acknowledged, every
// result served before the kill served again as the same envelope.
func (cr *crashRun) verify(t *testing.T, url string, platform ed25519.PublicKey) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, url, client.WithPlatformKeys(platform))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cr.ack.mu.Lock()
	defer cr.ack.mu.Unlock()
	for id, a := range cr.ack.sessions {
		st, err := c.Status(ctx, id, 0)
		if err != nil {
			t.Errorf("session %s: acknowledged at create, now: %v", id, err)
			continue
		}
		closed := st.State == cloisterv1.SessionState_SESSION_STATE_CLOSED
		switch {
		case a.closed && !closed:
			t.Errorf("session %s: its close was acknowledged, now %v", id, st.State)
		case closed && !a.closing:
			t.Errorf("session %s: closed, but nobody sent a close", id)
		}
		if closed {
			continue
		}
		for name, sha := range a.uploads {
			found := false
			for _, sl := range append(append([]*cloisterv1.Slot{}, st.Programs...), st.Inputs...) {
				found = found || sl.Name == name && sl.Present && sl.EnvelopeSha256 == sha
			}
			if !found {
				t.Errorf("session %s: upload %q acknowledged as %.12s, now missing or different (%v)", id, name, sha, st)
			}
		}
		if a.resultSHA != "" {
			if st.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
				t.Errorf("session %s: a result was served before the kill, now %v (%s)", id, st.State, st.Reason)
				continue
			}
			env, err := fetchEnvelope(ctx, url, id, cr.pol.Hash(), cr.s.dave, 0)
			if err != nil {
				t.Errorf("session %s: result served before the kill, now: %v", id, err)
				continue
			}
			if sum := sha256.Sum256(env); hex.EncodeToString(sum[:]) != a.resultSHA {
				t.Errorf("session %s: the result served before the kill was %.12s, now %.12s: a result was served that was not the stored one", id, a.resultSHA, hex.EncodeToString(sum[:]))
			}
		}
	}
}

// checkLedger reads the whole ledger: no step recorded twice, and every
// acknowledged upload recorded (the node sends at restart what a kill kept
// off the ledger; this waits for it).
func (cr *crashRun) checkLedger(t *testing.T, ledgerURL string) {
	t.Helper()
	lc, err := lclient.New(ledgerURL)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	for {
		seen := map[string]uint64{}
		uploads := map[string]bool{} // session|envelope
		dups := 0
		for from := uint64(0); ; {
			page, err := lc.Entries(ctx, from, 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page.Entries {
				var b map[string]any
				if err := json.Unmarshal(e.Signed.Entry.Body, &b); err != nil {
					t.Fatal(err)
				}
				kind := string(e.Signed.Entry.Kind)
				if kind != node.LedgerKindSessionEvent && kind != node.LedgerKindResultCommitted {
					continue
				}
				key := fmt.Sprint(kind, b["event"], b["session"], b["name"], b["principal"], b["output"], b["restarts"])
				if prev, ok := seen[key]; ok {
					dups++
					t.Errorf("recorded twice: entries %d and %d are the same step (%s)", prev, e.Index, key)
				}
				seen[key] = e.Index
				if sha, ok := b["envelope_sha256"].(string); ok {
					uploads[fmt.Sprint(b["session"], "|", sha)] = true
				}
			}
			if len(page.Entries) == 0 {
				break
			}
			from += uint64(len(page.Entries))
		}
		missing := 0
		cr.ack.mu.Lock()
		for id, a := range cr.ack.sessions {
			for _, sha := range a.uploads {
				if !uploads[id+"|"+sha] {
					missing++
				}
			}
		}
		cr.ack.mu.Unlock()
		if missing == 0 || dups > 0 {
			t.Logf("ledger: %d session steps, none twice, every acknowledged upload recorded", len(seen))
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%d acknowledged uploads are not on the ledger", missing)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// TestCrashRecovery kills the node at random points of uploads, runs and
// ledger recording, restarts it, and checks that no acknowledged session
// or step is lost or duplicated, that no result was served that the node
// had not stored, and that no ledger entry is recorded twice.
func TestCrashRecovery(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills node processes")
	}
	bin := buildCloister(t)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("CLOISTER_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("seed %d (CLOISTER_CRASH_SEED=%d reproduces the kill points)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	dir := filepath.Join(t.TempDir(), "node")
	cr := &crashRun{s: newScenario(t), wasm: readTestdata(t, "sum.wasm"), ack: &acked{sessions: map[string]*ackedSession{}}}
	start := time.Now()
	const iterations = 8
	var np *testbin.Node
	var platform ed25519.PublicKey
	for i := 0; i < iterations; i++ {
		np = startNodeProcess(t, bin, dir)
		if platform == nil {
			pk, err := keysOf(filepath.Join(dir, node.PlatformKeyFile))
			if err != nil {
				t.Fatal(err)
			}
			platform = pk
			cr.doc = cr.s.sumPolicy(t, keys.FormatSigningKey(pk), "sum.wasm", cr.wasm)
			cr.pol = mustParse(t, cr.doc)
		}
		cr.verify(t, np.URL, platform)
		if t.Failed() {
			t.Fatalf("after kill %d:\n%s", i, np.Log())
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < 3; w++ {
			wrng := rand.New(rand.NewPCG(seed, uint64(i*10+w)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				cr.flow(ctx, np.URL, platform, wrng)
			}()
		}
		after := time.Duration(200+rng.IntN(1800)) * time.Millisecond
		time.Sleep(after)
		np.Kill()
		cancel()
		wg.Wait()
		cr.ack.mu.Lock()
		results, closes := 0, 0
		for _, a := range cr.ack.sessions {
			results += min(1, len(a.resultSHA))
			if a.closed {
				closes++
			}
		}
		t.Logf("kill %d after %s: so far %d sessions acknowledged (%d creates sent), %d results served, %d closed", i+1, after, len(cr.ack.sessions), cr.ack.attempts, results, closes)
		cr.ack.mu.Unlock()
	}
	np = startNodeProcess(t, bin, dir)
	cr.verify(t, np.URL, platform)
	cr.checkLedger(t, np.LedgerURL)
	if t.Failed() {
		t.Logf("node log after the last restart:\n%s", np.Log())
	}
	// Every session the node holds was asked for: nothing duplicated.
	held := sessionsHeld(t, dir)
	cr.ack.mu.Lock()
	defer cr.ack.mu.Unlock()
	if held < len(cr.ack.sessions) || held > cr.ack.attempts {
		t.Errorf("the node holds %d sessions; %d were acknowledged, %d asked for", held, len(cr.ack.sessions), cr.ack.attempts)
	}
	t.Logf("%d kills in %s", iterations, time.Since(start).Round(time.Millisecond))
}

// sessionsHeld counts the sessions in dir, open or closed.
func sessionsHeld(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	ents, _ := os.ReadDir(filepath.Join(dir, "sessions"))
	for _, e := range ents {
		// A log of zeros only is a spare, made for a session to come.
		if id, ok := strings.CutSuffix(e.Name(), ".log"); ok && protocol.ValidSessionID(id) == nil {
			if b, err := os.ReadFile(filepath.Join(dir, "sessions", e.Name())); err == nil && bytes.Count(b, []byte{0}) < len(b) {
				n++
			}
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "sessions", "closed.log"))
	closed := map[string]bool{}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var ts struct {
			ID       string `json:"id"`
			Recorded bool   `json:"recorded"`
		}
		if json.Unmarshal(line, &ts) == nil && !ts.Recorded {
			closed[ts.ID] = true
		}
	}
	return n + len(closed)
}

// keysOf reads the public signing key of a key file.
func keysOf(path string) (ed25519.PublicKey, error) {
	k, err := keys.Load(path)
	if err != nil {
		return nil, err
	}
	return k.Public().Signing, nil
}
