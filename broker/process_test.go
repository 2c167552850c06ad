package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/broker"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/seal"
	"github.com/cloisterhq/cloister/sealed"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Cleanup()
	os.Exit(code)
}

// proc is a process the test started; its stdout lines go to lines.
type proc struct {
	cmd   *exec.Cmd
	lines chan string
	done  chan struct{}
	mu    sync.Mutex
	log   bytes.Buffer
}

func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), lines: make(chan string, 64), done: make(chan struct{})}
	out, _ := p.cmd.StdoutPipe()
	p.cmd.Stderr = &lockedWriter{p}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case p.lines <- sc.Text():
			default:
			}
		}
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

type lockedWriter struct{ p *proc }

func (w *lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.log.Write(b)
}

func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) line(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(60 * time.Second)
	for {
		select {
		case l := <-p.lines:
			if v, ok := strings.CutPrefix(l, prefix+" "); ok {
				return v
			}
		case <-p.done:
			t.Fatalf("%v exited before printing %q:\n%s", p.cmd.Args, prefix, p.log.String())
		case <-timeout:
			t.Fatalf("%v printed no %q in 60s", p.cmd.Args, prefix)
		}
	}
}

// run runs the CLI and returns exit status, stdout, stderr.
func run(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), errb.String()
}

func mustRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	code, out, errOut := run(t, bin, args...)
	if code != 0 {
		t.Fatalf("cloister %s: exit %d\n%s", strings.Join(args, " "), code, errOut)
	}
	return strings.TrimSpace(out)
}

type brokerProc struct {
	*proc
	url, key, dir string
}

func startBroker(t *testing.T, bin, dir, ledgerURL string) *brokerProc {
	p := start(t, bin, "broker", "--listen", "127.0.0.1:0", "--data", dir, "--ledger", ledgerURL)
	b := &brokerProc{proc: p, dir: dir}
	b.url = p.line(t, "url")
	b.key = p.line(t, "signing_key")
	return b
}

// world is a ledger and three brokers, each its own process, an owner
// with an artifact whose key is shared 2-of-3 among the brokers, and a
// node (played by the test: its key signs its entries and its isolates'
// software evidence) with sessions.
type world struct {
	t         *testing.T
	bin       string
	dir       string
	ledgerURL string
	lc        *client.Client
	brokers   []*brokerProc
	ownerFile string
	owner     *keys.PrivateKey
	art       acl.Artifact
	plain     []byte
	sealedF   string
	node      ed25519.PrivateKey
	att       *software.Attester
	meas      string
	ph        string
}

func newWorld(t *testing.T) *world {
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, bin: bin, dir: t.TempDir()}
	w.ledgerURL, w.lc = startLedger(t, bin, w.dir)
	url := w.ledgerURL
	for i := range 3 {
		w.brokers = append(w.brokers, startBroker(t, bin, filepath.Join(w.dir, fmt.Sprintf("broker%d", i+1)), url))
	}
	// The owner seals a program, shares its key among the brokers after
	// verifying them, and registers the artifact.
	if w.owner, err = keys.Generate(); err != nil {
		t.Fatal(err)
	}
	w.ownerFile = filepath.Join(w.dir, "owner.key")
	if err := w.owner.Save(w.ownerFile); err != nil {
		t.Fatal(err)
	}
	w.plain = []byte("the innovator's program: \x00asm and a canary 0123456789abcdef0123456789abcdef")
	pf := filepath.Join(w.dir, "prog.wasm")
	os.WriteFile(pf, w.plain, 0o600)
	w.sealedF = filepath.Join(w.dir, "prog.sealed")
	sj := filepath.Join(w.dir, "prog.json")
	os.WriteFile(sj, []byte(mustRun(t, bin, "program", "seal", pf, "--out", w.sealedF, "--json")), 0o600)
	var sum sealed.Summary
	raw, _ := os.ReadFile(sj)
	json.Unmarshal(raw, &sum)
	args := []string{"broker", "register", "--shares", "3", "--threshold", "2", "--key", w.ownerFile, "--artifact", sum.Digest,
		"--content-key", w.sealedF + ".key", "--sealed-json", sj}
	for _, b := range w.brokers {
		args = append(args, "--broker", b.url, "--broker-key", b.key)
	}
	mustRun(t, bin, args...)
	mustRun(t, bin, "artifact", "register", "--ledger", url, "--key", w.ownerFile, "--sealed-json", sj)
	raw, _ = os.ReadFile(sj)
	var es struct {
		BrokerKeys []string `json:"broker_keys"`
		Threshold  int      `json:"threshold"`
		Commitment []string `json:"commitment"`
	}
	json.Unmarshal(raw, &es)
	w.art = acl.Artifact{Digest: sum.Digest, PlaintextSHA256: sum.SHA256, Brokers: es.BrokerKeys, Threshold: es.Threshold, Commitment: es.Commitment}

	// The node registers and opens sessions.
	_, w.node, _ = ed25519.GenerateKey(nil)
	m := sha256.Sum256([]byte("node runtime"))
	w.meas = hex.EncodeToString(m[:])
	if w.att, err = software.NewAttester(w.node, software.WithMeasurement(m)); err != nil {
		t.Fatal(err)
	}
	w.ph = strings.Repeat("cd", 32)
	w.append(w.node, ledger.KindNodeRegistered, map[string]any{"platform_key": w.nodeText(), "class": "software",
		"evidence": base64.StdEncoding.EncodeToString([]byte("{}")), "measurement": w.meas})
	return w
}

// startLedger starts a one-validator ledger ("cloister ledger start", a
// process of its own) with its home under dir, and waits (at most a
// minute) until its API answers.
func startLedger(t *testing.T, bin, dir string) (string, *client.Client) {
	t.Helper()
	out := mustRun(t, bin, "ledger", "testnet", "--validators", "1", "--out", filepath.Join(dir, "ledger"))
	home, url, _ := strings.Cut(out, " ")
	start(t, bin, "ledger", "start", "--home", home)
	lc, err := client.New(url)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := lc.Status(ctx)
		cancel()
		if err == nil {
			return url, lc
		}
		if time.Now().After(deadline) {
			t.Fatalf("ledger not up in 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (w *world) nodeText() string {
	return protocol.FormatEd25519Key(w.node.Public().(ed25519.PublicKey))
}

func (w *world) append(k ed25519.PrivateKey, kind verify.Kind, body any) uint64 {
	w.t.Helper()
	return appendEntry(w.t, w.lc, k, kind, body)
}

// appendEntry signs an entry with k, appends it and waits (at most 40 s)
// for its commit.
func appendEntry(t *testing.T, lc *client.Client, k ed25519.PrivateKey, kind verify.Kind, body any) uint64 {
	t.Helper()
	se, err := verify.NewEntry(k, kind, body)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	rc, err := lc.Append(ctx, se)
	if err != nil {
		t.Fatalf("%s: %v", kind, err)
	}
	return rc.Index
}

// session opens a session on the node (its session.created entry) and
// returns the isolate that asks for keys in it.
func (w *world) session(id string) *broker.Isolate {
	w.t.Helper()
	w.append(w.node, ledger.KindSessionEvent, map[string]any{"session": id, "event": "session.created", "policy_hash": w.ph})
	sk, err := seal.GenerateKey()
	if err != nil {
		w.t.Fatal(err)
	}
	return &broker.Isolate{Node: w.nodeText(), Session: id, PolicyHash: w.ph, SessionKey: sk,
		Attest: func(ctx context.Context, rd [attest.ReportDataSize]byte) (*attest.Evidence, error) {
			return w.att.Attest(ctx, rd)
		}}
}

func (w *world) grant(args ...string) uint64 {
	w.t.Helper()
	out := mustRun(w.t, w.bin, append([]string{"acl", "grant", "--ledger", w.ledgerURL, "--key", w.ownerFile, "--artifact", w.art.Digest}, args...)...)
	i, err := strconv.ParseUint(out, 10, 64)
	if err != nil {
		w.t.Fatalf("acl grant printed %q", out)
	}
	return i
}

func (w *world) urls(which ...int) []string {
	u := make([]string, len(w.brokers))
	for _, i := range which {
		u[i] = w.brokers[i].url
	}
	return u
}

func (w *world) obtain(grant uint64, iso *broker.Isolate, which ...int) (*sealed.Key, []broker.Released, error) {
	if len(which) == 0 {
		which = []int{0, 1, 2}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return broker.Obtain(ctx, w.owner.Public().SigningString(), &w.art, grant, w.urls(which...), iso)
}

func (w *world) opens(k *sealed.Key) {
	w.t.Helper()
	f, err := os.Open(w.sealedF)
	if err != nil {
		w.t.Fatal(err)
	}
	defer f.Close()
	var out bytes.Buffer
	want := sha256.Sum256(w.plain)
	if _, _, err := sealed.Open(&out, f, k, &want); err != nil || !bytes.Equal(out.Bytes(), w.plain) {
		w.t.Fatalf("the recovered key does not open the sealed program: %v", err)
	}
}

func wantRefused(t *testing.T, err error, frag string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), frag) {
		t.Fatalf("got %v; want a refusal saying %q", err, frag)
	}
}

// TestKeyBrokerProcesses runs the whole release protocol with a ledger
// validator and three brokers as processes of their own, and every attack
// the issue lists that does not need a node's run.
func TestKeyBrokerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a ledger and three brokers")
	}
	w := newWorld(t)

	t.Run("release", func(t *testing.T) {
		iso := w.session("s-ok")
		g := w.grant("--node", w.nodeText(), "--session", "s-ok", "--not-after", "+2m")
		k, rel, err := w.obtain(g, iso)
		if err != nil {
			t.Fatal(err)
		}
		w.opens(k)
		// Every broker's release is its own committed entry, judged by
		// the ledger; one use in all.
		for _, r := range rel {
			e, err := w.lc.Get(context.Background(), r.Entry)
			if err != nil || e.Signed.Entry.Kind != acl.KindKeyReleased || r.Err != nil {
				t.Fatalf("broker %d: %+v: entry %v", r.Share, r, err)
			}
		}
		// The key came with the first two shares; the third broker's
		// release is committed all the same.
		var out string
		var l struct {
			Grants []struct {
				Index    uint64   `json:"index"`
				Sessions []string `json:"sessions"`
			} `json:"grants"`
			Releases []json.RawMessage `json:"releases"`
		}
		for deadline := time.Now().Add(30 * time.Second); len(l.Releases) < 3 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			out = mustRun(t, w.bin, "acl", "list", "--ledger", w.ledgerURL, "--artifact", w.art.Digest, "--json")
			json.Unmarshal([]byte(out), &l)
		}
		if len(l.Grants) == 0 || l.Grants[0].Index != g || len(l.Grants[0].Sessions) != 1 || len(l.Releases) != 3 {
			t.Fatalf("acl list: %s", out)
		}
	})
	t.Run("expired_by_block_time", func(t *testing.T) {
		iso := w.session("s-exp")
		end := time.Now().Add(3 * time.Second)
		g := w.grant("--node", w.nodeText(), "--session", "s-exp", "--not-after", end.UTC().Format(time.RFC3339))
		// Block time is the time the previous block was committed: once
		// the wall clock has passed the end, the block of a second
		// entry committed after it is past it too.
		time.Sleep(time.Until(end) + time.Second)
		for range 2 {
			w.append(w.node, ledger.KindNote, map[string]any{"tick": 1})
		}
		_, _, err := w.obtain(g, iso)
		wantRefused(t, err, "grant was valid until")
	})
	t.Run("revoked_a_moment_ago", func(t *testing.T) {
		iso := w.session("s-rev")
		g := w.grant("--node", w.nodeText(), "--session", "s-rev", "--not-after", "+2m")
		mustRun(t, w.bin, "acl", "revoke", "--ledger", w.ledgerURL, "--key", w.ownerFile, "--index", strconv.FormatUint(g, 10))
		_, _, err := w.obtain(g, iso)
		wantRefused(t, err, "was revoked by entry")
	})
	t.Run("uses_exhausted_across_two_brokers", func(t *testing.T) {
		a, b := w.session("s-use-a"), w.session("s-use-b")
		g := w.grant("--class", "software", "--measurement", w.meas, "--not-after", "+2m", "--uses", "1")
		if _, _, err := w.obtain(g, a, 0, 1); err != nil {
			t.Fatal(err)
		}
		_, _, err := w.obtain(g, b, 1, 2)
		wantRefused(t, err, "all are used")
	})
	t.Run("grant_for_another_session_or_measurement", func(t *testing.T) {
		w.session("s-mine")
		other := w.session("s-other")
		g := w.grant("--node", w.nodeText(), "--session", "s-mine", "--not-after", "+2m")
		_, _, err := w.obtain(g, other)
		wantRefused(t, err, "not session s-other")
		g = w.grant("--class", "software", "--measurement", strings.Repeat("99", 32), "--not-after", "+2m")
		_, _, err = w.obtain(g, other)
		wantRefused(t, err, "is not among the grant's")
	})
	t.Run("grant_for_another_node", func(t *testing.T) {
		// Node 2 has a session of the same id; the grant names node 1's.
		_, node2, _ := ed25519.GenerateKey(nil)
		n2 := protocol.FormatEd25519Key(node2.Public().(ed25519.PublicKey))
		w.append(node2, ledger.KindNodeRegistered, map[string]any{"platform_key": n2, "class": "software",
			"evidence": base64.StdEncoding.EncodeToString([]byte("{}")), "measurement": w.meas})
		w.append(node2, ledger.KindSessionEvent, map[string]any{"session": "s-node", "event": "session.created", "policy_hash": w.ph})
		w.session("s-node")
		g := w.grant("--node", w.nodeText(), "--session", "s-node", "--not-after", "+2m")
		att2, _ := software.NewAttester(node2, software.WithMeasurement([32]byte{2}))
		sk, _ := seal.GenerateKey()
		iso := &broker.Isolate{Node: n2, Session: "s-node", PolicyHash: w.ph, SessionKey: sk,
			Attest: func(ctx context.Context, rd [attest.ReportDataSize]byte) (*attest.Evidence, error) {
				return att2.Attest(ctx, rd)
			}}
		_, _, err := w.obtain(g, iso)
		wantRefused(t, err, "not session s-node of node "+n2)
	})
	t.Run("delegate_within_and_beyond_limits", func(t *testing.T) {
		dk := filepath.Join(w.dir, "dispatcher.key")
		d, _ := keys.Generate()
		d.Save(dk)
		out := mustRun(t, w.bin, "acl", "delegate", "--ledger", w.ledgerURL, "--key", w.ownerFile, "--artifact", w.art.Digest,
			"--delegate", d.Public().SigningString(), "--not-after", "+1h", "--max-duration", "1m", "--max-uses", "1", "--class", "software")
		w.session("s-del")
		base := []string{"acl", "grant", "--ledger", w.ledgerURL, "--key", dk, "--owner", w.owner.Public().SigningString(),
			"--delegation", out, "--artifact", w.art.Digest}
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"--node", w.nodeText(), "--session", "s-del", "--not-after", "+10m"}, "the delegation allows at most 1m0s"},
			{[]string{"--node", w.nodeText(), "--session", "s-del", "--not-after", "+30s", "--uses", "2"}, "the delegation at most 1"},
			{[]string{"--class", "sev-snp", "--measurement", w.meas, "--not-after", "+30s"}, `class "sev-snp" is not among`},
		} {
			code, _, errOut := run(t, w.bin, append(base, c.args...)...)
			if code != 1 || !strings.Contains(errOut, c.want) {
				t.Errorf("delegate grant %v: exit %d %s", c.args, code, errOut)
			}
		}
		gi := mustRun(t, w.bin, append(base, "--node", w.nodeText(), "--session", "s-del", "--not-after", "+30s")...)
		if _, err := strconv.ParseUint(gi, 10, 64); err != nil {
			t.Fatalf("a grant within the limits: %q", gi)
		}
	})
	t.Run("delegate_rate_and_tcb_floor", func(t *testing.T) {
		dk := filepath.Join(w.dir, "dispatcher2.key")
		d, _ := keys.Generate()
		d.Save(dk)
		delegate := func(extra ...string) string {
			return mustRun(t, w.bin, append([]string{"acl", "delegate", "--ledger", w.ledgerURL, "--key", w.ownerFile, "--artifact", w.art.Digest,
				"--delegate", d.Public().SigningString(), "--not-after", "+1h", "--max-duration", "1m", "--max-uses", "1"}, extra...)...)
		}
		grant := func(delegation string) (int, string) {
			code, _, errOut := run(t, w.bin, "acl", "grant", "--ledger", w.ledgerURL, "--key", dk, "--owner", w.owner.Public().SigningString(),
				"--delegation", delegation, "--artifact", w.art.Digest, "--node", w.nodeText(), "--session", "s-del", "--not-after", "+30s")
			return code, errOut
		}
		rated := delegate("--rate", "1/1h")
		if code, errOut := grant(rated); code != 0 {
			t.Fatalf("first grant within the rate: exit %d %s", code, errOut)
		}
		if code, errOut := grant(rated); code != 1 || !strings.Contains(errOut, "allows 1 grants in any 1h0m0s of block time") {
			t.Errorf("second grant within the hour: exit %d %s", code, errOut)
		}
		// This world's node recorded no verifiable evidence, so no floor
		// can be shown to hold for it.
		floored := delegate("--min-tcb", "software:svn=1", "--min-tcb", "tdx:tee_tcb_svn0=3,pce_svn=11")
		if code, errOut := grant(floored); code != 1 || !strings.Contains(errOut, "does not verify at block time") {
			t.Errorf("grant under a TCB floor to a node without verifiable evidence: exit %d %s", code, errOut)
		}
		var l struct {
			Delegations []struct {
				Index      uint64         `json:"index"`
				Delegation acl.Delegation `json:"delegation"`
			} `json:"delegations"`
		}
		json.Unmarshal([]byte(mustRun(t, w.bin, "acl", "list", "--ledger", w.ledgerURL, "--artifact", w.art.Digest, "--json")), &l)
		seen := 0
		for _, x := range l.Delegations {
			switch strconv.FormatUint(x.Index, 10) {
			case rated:
				if r := x.Delegation.Limits.Rate; r == nil || r.Grants != 1 || r.WindowSeconds != 3600 {
					t.Errorf("acl list: rate of delegation %s: %+v", rated, r)
				}
				seen++
			case floored:
				if m := x.Delegation.Limits.MinTCB; m["software"]["svn"] != 1 || m["tdx"]["tee_tcb_svn0"] != 3 || m["tdx"]["pce_svn"] != 11 {
					t.Errorf("acl list: min_tcb of delegation %s: %v", floored, m)
				}
				seen++
			}
		}
		if seen != 2 {
			t.Errorf("acl list shows %d of the 2 delegations: %+v", seen, l)
		}
		if code, _, errOut := run(t, w.bin, "acl", "delegate", "--ledger", w.ledgerURL, "--key", w.ownerFile, "--artifact", w.art.Digest,
			"--delegate", d.Public().SigningString(), "--not-after", "+1h", "--max-duration", "1m", "--max-uses", "1", "--rate", "5/90ms"); code != 2 || !strings.Contains(errOut, "--rate") {
			t.Errorf("--rate 5/90ms: exit %d %s", code, errOut)
		}
	})
	t.Run("tampered_ciphertext", func(t *testing.T) {
		iso := w.session("s-tamper")
		g := w.grant("--node", w.nodeText(), "--session", "s-tamper", "--not-after", "+2m")
		k, _, err := w.obtain(g, iso)
		if err != nil {
			t.Fatal(err)
		}
		ct, _ := os.ReadFile(w.sealedF)
		ct[len(ct)-20] ^= 1
		var out bytes.Buffer
		want := sha256.Sum256(w.plain)
		if _, _, err := sealed.Open(&out, bytes.NewReader(ct), k, &want); err == nil || out.Len() >= len(w.plain) {
			t.Fatalf("a tampered ciphertext opened: %v, %d bytes out", err, out.Len())
		}
	})
	t.Run("grant_by_neither_owner_nor_delegate", func(t *testing.T) {
		stranger := filepath.Join(w.dir, "stranger.key")
		sk, _ := keys.Generate()
		sk.Save(stranger)
		w.session("s-str")
		code, _, errOut := run(t, w.bin, "acl", "grant", "--ledger", w.ledgerURL, "--key", stranger, "--owner", w.owner.Public().SigningString(),
			"--artifact", w.art.Digest, "--node", w.nodeText(), "--session", "s-str", "--not-after", "+1m")
		if code != 1 || !strings.Contains(errOut, "names no delegation") {
			t.Fatalf("a stranger's grant: exit %d %s", code, errOut)
		}
	})
	t.Run("unattested_requester", func(t *testing.T) {
		iso := w.session("s-unatt")
		g := w.grant("--node", w.nodeText(), "--session", "s-unatt", "--not-after", "+2m")
		// Evidence signed by some other key than the node's platform key.
		_, fake, _ := ed25519.GenerateKey(nil)
		fa, _ := software.NewAttester(fake, software.WithMeasurement([32]byte{1}))
		iso.Attest = func(ctx context.Context, rd [attest.ReportDataSize]byte) (*attest.Evidence, error) {
			return fa.Attest(ctx, rd)
		}
		_, _, err := w.obtain(g, iso)
		wantRefused(t, err, "not among the 1 pinned keys")
	})
	t.Run("evidence_for_another_key", func(t *testing.T) {
		iso := w.session("s-key")
		g := w.grant("--node", w.nodeText(), "--session", "s-key", "--not-after", "+2m")
		// The evidence binds another HPKE key than the one the share
		// would be sealed to.
		other, _ := seal.GenerateKey()
		iso.Attest = func(ctx context.Context, rd [attest.ReportDataSize]byte) (*attest.Evidence, error) {
			return nil, errors.New("unused")
		}
		err := rawRelease(t, w, g, iso, keys.FormatSealingKey(other.PublicKey()), nil)
		wantRefused(t, err, "report data mismatch")
	})
	t.Run("evidence_for_another_policy", func(t *testing.T) {
		iso := w.session("s-policy")
		g := w.grant("--node", w.nodeText(), "--session", "s-policy", "--not-after", "+2m")
		iso.PolicyHash = strings.Repeat("00", 32)
		_, _, err := w.obtain(g, iso)
		wantRefused(t, err, "was created for policy "+w.ph)
	})
	t.Run("stale_or_replayed_nonce", func(t *testing.T) {
		iso := w.session("s-nonce")
		g := w.grant("--node", w.nodeText(), "--session", "s-nonce", "--not-after", "+2m", "--uses", "3")
		n := fetchNonce(t, w.brokers[0].url)
		if err := rawRelease(t, w, g, iso, "", n); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, rawRelease(t, w, g, iso, "", n), "used already")
		wantRefused(t, rawRelease(t, w, g, iso, "", bytes.Repeat([]byte{7}, 32)), "not one this broker issued")
	})
	t.Run("one_broker_alone", func(t *testing.T) {
		iso := w.session("s-alone")
		g := w.grant("--node", w.nodeText(), "--session", "s-alone", "--not-after", "+2m")
		_, rel, err := w.obtain(g, iso, 1)
		wantRefused(t, err, "1 of the 2 shares needed")
		if len(rel) != 3 || rel[0].Err == nil {
			t.Fatalf("releases %+v", rel)
		}
	})
	t.Run("wrong_share", func(t *testing.T) {
		iso := w.session("s-wrong")
		g := w.grant("--node", w.nodeText(), "--session", "s-wrong", "--not-after", "+2m")
		n := fetchNonce(t, w.brokers[0].url)
		s := releaseShare(t, w, g, iso, n)
		s.Value[3] ^= 1
		wantRefused(t, broker.VerifyShare(&s, w.art.Commitment), "does not match the artifact's commitment")
	})
	t.Run("restart_and_one_down", func(t *testing.T) {
		// Broker 1 restarts on its data directory: its share and its
		// releases (on the ledger) are kept. Broker 3 is down: 2 of 3
		// still release.
		b := w.brokers[0]
		b.stop()
		w.brokers[0] = startBroker(t, w.bin, b.dir, w.ledgerURL)
		if w.brokers[0].key != b.key {
			t.Fatalf("broker 1 came back with key %s, was %s", w.brokers[0].key, b.key)
		}
		w.brokers[2].kill()
		iso := w.session("s-restart")
		g := w.grant("--node", w.nodeText(), "--session", "s-restart", "--not-after", "+2m")
		k, rel, err := w.obtain(g, iso)
		if err != nil {
			t.Fatalf("%v %+v", err, rel)
		}
		w.opens(k)
	})
}

// TestOwnerRefusesUnverifiedBroker: the owner's CLI registers nothing
// with a broker whose evidence is not signed by the key pinned for it.
func TestOwnerRefusesUnverifiedBroker(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a broker")
	}
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b := start(t, bin, "broker", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "b"))
	url := b.line(t, "url")
	key := b.line(t, "signing_key")
	owner, _ := keys.Generate()
	owner.Save(filepath.Join(dir, "o.key"))
	os.WriteFile(filepath.Join(dir, "p"), []byte("program"), 0o600)
	mustRun(t, bin, "program", "seal", filepath.Join(dir, "p"), "--out", filepath.Join(dir, "p.sealed"))
	_, sum, _ := sealed.LoadKeyFile(filepath.Join(dir, "p.sealed.key"))
	other, _ := keys.Generate()
	for _, c := range []struct {
		pin, measurement, want string
	}{
		{other.Public().SigningString(), "", "not among the 1 pinned keys"},
		{key, strings.Repeat("00", 32), "measurement not allowed"},
		{"", "", "no platform key is pinned"},
	} {
		args := []string{"broker", "register", "--broker", url, "--key", filepath.Join(dir, "o.key"),
			"--artifact", sum.Digest, "--content-key", filepath.Join(dir, "p.sealed.key")}
		if c.pin != "" {
			args = append(args, "--broker-key", c.pin)
		}
		if c.measurement != "" {
			args = append(args, "--measurement", c.measurement)
		}
		code, _, errOut := run(t, bin, args...)
		if code != 1 || !strings.Contains(errOut, "refusing to register") || !strings.Contains(errOut, c.want) {
			t.Errorf("pin %s: exit %d %s", c.pin, code, errOut)
		}
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "b", "keys")); len(ents) != 0 {
		t.Fatalf("the broker holds %d keys after refused registrations", len(ents))
	}
}

func fetchNonce(t *testing.T, url string) []byte {
	t.Helper()
	resp, err := http.Post(url+"/v1/nonce", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var n struct {
		Nonce []byte `json:"nonce"`
	}
	json.NewDecoder(resp.Body).Decode(&n)
	return n.Nonce
}

// rawRelease asks broker 1 for its share with evidence binding
// evidenceKey (the session's key if ""), under nonce (a fresh one if nil).
func rawRelease(t *testing.T, w *world, grant uint64, iso *broker.Isolate, evidenceKey string, nonce []byte) error {
	t.Helper()
	_, err := doRelease(t, w, grant, iso, evidenceKey, nonce)
	return err
}

func releaseShare(t *testing.T, w *world, grant uint64, iso *broker.Isolate, nonce []byte) broker.Share {
	t.Helper()
	resp, err := doRelease(t, w, grant, iso, "", nonce)
	if err != nil {
		t.Fatal(err)
	}
	req := &broker.ReleaseRequest{Owner: w.owner.Public().SigningString(), Artifact: w.art.Digest, Grant: grant, Node: iso.Node,
		Session: iso.Session, PolicyHash: iso.PolicyHash, SessionKey: keys.FormatSealingKey(iso.SessionKey.PublicKey()), Nonce: nonce}
	rd := broker.ReleaseReportData(req)
	v, err := seal.Open(iso.SessionKey, resp.Envelope, broker.ShareInfoForSession(req.Owner, req.Artifact, req.Session, resp.Share), rd[:])
	if err != nil {
		t.Fatal(err)
	}
	s := broker.Share{Index: resp.Share}
	copy(s.Value[:], v)
	return s
}

func doRelease(t *testing.T, w *world, grant uint64, iso *broker.Isolate, evidenceKey string, nonce []byte) (*broker.ReleaseResponse, error) {
	t.Helper()
	url := w.brokers[0].url
	if nonce == nil {
		nonce = fetchNonce(t, url)
	}
	sk := keys.FormatSealingKey(iso.SessionKey.PublicKey())
	req := &broker.ReleaseRequest{Owner: w.owner.Public().SigningString(), Artifact: w.art.Digest, Grant: grant, Node: iso.Node,
		Session: iso.Session, PolicyHash: iso.PolicyHash, SessionKey: evidenceKey, Nonce: nonce}
	if evidenceKey == "" {
		req.SessionKey = sk
	}
	rd := broker.ReleaseReportData(req)
	ev, err := w.att.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Evidence, req.SessionKey = ev, sk
	b, _ := json.Marshal(req)
	resp, err := http.Post(url+"/v1/release", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
	}
	var rr broker.ReleaseResponse
	return &rr, json.Unmarshal(body, &rr)
}
