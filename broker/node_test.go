package broker_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/broker"
	sclient "github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/sealed"
)

// sealedNet is every component of the sealed-program path as a process of
// its own on loopback: a ledger validator, a blob store, three brokers
// holding a 2-of-3 sharing of the program's key, and a "cloister node"
// that reads grants from the ledger. The test plays the owner and the
// session's parties.
type sealedNet struct {
	t         *testing.T
	bin       string
	dir       string
	ledgerURL string
	lc        *client.Client
	storeURL  string
	brokers   []*brokerProc
	owner     *keys.PrivateKey
	ownerFile string
	canary    []byte
	wasm      []byte
	key       sealed.Key
	shares    []broker.Share
	ct        []byte
	sp        policy.SealedProgram
	sum       sealed.Summary
	node      *testbin.Node
	nodeDir   string
	tmpDir    string
	nodeKey   *keys.PrivateKey
	c         *sclient.Client
	bob, dave *keys.PrivateKey
}

// canaryAlphabet makes the canary printable, so that the guest's source
// can take it as a string at build time.
const canaryAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func newSealedNet(t *testing.T) *sealedNet {
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s := &sealedNet{t: t, bin: bin, dir: t.TempDir()}
	s.ledgerURL, s.lc = startLedger(t, bin, s.dir)
	if s.owner, err = keys.Generate(); err != nil {
		t.Fatal(err)
	}
	s.ownerFile = filepath.Join(s.dir, "owner.key")
	if err := s.owner.Save(s.ownerFile); err != nil {
		t.Fatal(err)
	}
	ownerText := s.owner.Public().SigningString()
	store := start(t, bin, "blob", "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(s.dir, "store"), "--push-key", ownerText)
	s.storeURL = store.logMatch(t, regexp.MustCompile(`blob store on (http://127\.0\.0\.1:[0-9]+)`)) + "/programs"
	for i := range 3 {
		s.brokers = append(s.brokers, startBroker(t, bin, filepath.Join(s.dir, fmt.Sprintf("broker%d", i+1)), s.ledgerURL))
	}

	// The innovator's program: a canary of 32 random characters in its
	// data section, fresh for this run, so that finding it anywhere can
	// only mean this program's plaintext leaked.
	s.canary = make([]byte, 32)
	rand.Read(s.canary)
	for i, b := range s.canary {
		s.canary[i] = canaryAlphabet[int(b)%len(canaryAlphabet)]
	}
	wasmPath := filepath.Join(s.dir, "canary.wasm")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-X main.canary="+string(s.canary), "-o", wasmPath, "./testdata/canary")
	build.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building testdata/canary: %v\n%s", err, out)
	}
	if s.wasm, err = os.ReadFile(wasmPath); err != nil {
		t.Fatal(err)
	}
	os.Remove(wasmPath)
	if !bytes.Contains(s.wasm, s.canary) {
		t.Fatal("the canary is not in the program's data section")
	}

	// The owner seals it, stores the ciphertext, shares the key 2-of-3
	// among the brokers it verified, registers the artifact.
	var ct bytes.Buffer
	key, sum, err := sealed.Seal(&ct, bytes.NewReader(s.wasm))
	if err != nil {
		t.Fatal(err)
	}
	s.key, s.sum, s.ct = *key, sum, ct.Bytes()
	if bytes.Contains(s.ct, s.canary) {
		t.Fatal("the ciphertext holds the canary")
	}
	sealedPath := filepath.Join(s.dir, "canary.sealed")
	if err := os.WriteFile(sealedPath, s.ct, 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := blob.OpenStore(s.storeURL, blob.Options{Key: s.owner.Signer()})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.PushFile(ctx, sealedPath); err != nil {
		t.Fatal(err)
	}
	var com []string
	if s.shares, com, err = broker.Split(key, 3, 2); err != nil {
		t.Fatal(err)
	}
	art := acl.Artifact{Digest: sum.Digest, PlaintextSHA256: sum.SHA256, Threshold: 2, Commitment: com}
	s.sp = policy.SealedProgram{Digest: sum.Digest, Owner: ownerText, Stores: []string{s.storeURL}, Threshold: 2}
	for i, b := range s.brokers {
		pin, err := protocol.ParseEd25519Key(b.key)
		if err != nil {
			t.Fatal(err)
		}
		vb, err := broker.Verify(ctx, b.url, broker.Pins{Keys: []ed25519.PublicKey{pin}})
		if err != nil {
			t.Fatal(err)
		}
		if err := broker.Register(ctx, vb, s.owner.Signer(), sum.Digest, s.shares[i], 2); err != nil {
			t.Fatal(err)
		}
		art.Brokers = append(art.Brokers, b.key)
		s.sp.Brokers = append(s.sp.Brokers, policy.SealedBroker{URL: b.url, Key: b.key})
	}
	s.appendEntry(s.owner.Signer(), acl.KindArtifactRegistered, art)

	// The node: its own process, recording on the ledger and reading
	// grants from it; its temporary files go to a directory the test
	// walks too.
	s.nodeDir, s.tmpDir = filepath.Join(s.dir, "node"), filepath.Join(s.dir, "node-tmp")
	for _, d := range []string{s.nodeDir, s.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if s.nodeKey, _, err = keys.LoadOrCreate(filepath.Join(s.nodeDir, node.PlatformKeyFile)); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", s.tmpDir)
	s.node, err = testbin.StartNode(bin, 2*time.Minute, "--data", s.nodeDir, "--listen", "127.0.0.1:0", "--ledger", s.ledgerURL, "--warm-workers", "0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.node.Stop)
	if s.c, err = sclient.Dial(ctx, s.node.URL, sclient.WithPlatformKeys(s.nodeKey.Public().Signing)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.c.Close)
	if s.bob, err = keys.Generate(); err != nil {
		t.Fatal(err)
	}
	if s.dave, err = keys.Generate(); err != nil {
		t.Fatal(err)
	}
	return s
}

// logMatch waits (at most a minute) until the process's standard error
// holds a line matching re, and returns its first group.
func (p *proc) logMatch(t *testing.T, re *regexp.Regexp) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		p.mu.Lock()
		m := re.FindStringSubmatch(p.log.String())
		p.mu.Unlock()
		if m != nil {
			return m[1]
		}
		select {
		case <-p.done:
			t.Fatalf("%v exited:\n%s", p.cmd.Args, p.log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v logged nothing matching %s in a minute", p.cmd.Args, re)
		}
	}
}

func (s *sealedNet) appendEntry(k ed25519.PrivateKey, kind string, body any) uint64 {
	s.t.Helper()
	return appendEntry(s.t, s.lc, k, verify.Kind(kind), body)
}

// session creates and attests a session whose policy names the sealed
// program as sp (with the program's sha256 as sha) and whose output
// stdout dave reads.
func (s *sealedNet) session(sp policy.SealedProgram, sha string) *sclient.AttestedSession {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	doc, err := json.Marshal(&policy.Policy{
		Version: policy.Version,
		Name:    "canary",
		Principals: []policy.Principal{
			{ID: "bob", SigningKey: s.bob.Public().SigningString(), Roles: []policy.Role{policy.RoleDataProvider}},
			{ID: "dave", SigningKey: s.dave.Public().SigningString(), SealingKey: s.dave.Public().SealingString(), Roles: []policy.Role{policy.RoleResultReader}},
		},
		Programs: []policy.Program{{Name: "canary.wasm", SHA256: sha, Sealed: &sp}},
		Inputs:   []policy.Input{{Name: "go", Provider: "bob"}},
		Outputs:  []policy.Output{{Name: "stdout", Readers: []string{"dave"}}},
		Isolates: []policy.Isolate{{Class: "software", PlatformKeys: []string{s.nodeKey.Public().SigningString()}}},
		Limits:   policy.Limits{Memory: "128MiB", Timeout: "2m", MaxOutput: "1MiB"},
		Expires:  time.Now().Add(time.Hour).UTC().Truncate(time.Second),
	})
	if err != nil {
		s.t.Fatal(err)
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		s.t.Fatal(err)
	}
	id, err := s.c.CreateSession(ctx, doc)
	if err != nil {
		s.t.Fatal(err)
	}
	as, err := s.c.Attest(ctx, id, pol)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(as.CloseIdleConnections)
	return as
}

// grantSession grants the key to that session of the node until +5m,
// once its session.created entry is committed (the ledger refuses a grant
// to a session it does not hold).
func (s *sealedNet) grantSession(as *sclient.AttestedSession) uint64 {
	s.t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		code, out, errOut := run(s.t, s.bin, "acl", "grant", "--ledger", s.ledgerURL, "--key", s.ownerFile, "--artifact", s.sp.Digest,
			"--node", s.nodeKey.Public().SigningString(), "--session", as.ID(), "--not-after", "+5m")
		if code == 0 {
			i, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
			if err != nil {
				s.t.Fatalf("acl grant printed %q", out)
			}
			return i
		}
		if !strings.Contains(errOut, "no session.created entry") || time.Now().After(deadline) {
			s.t.Fatalf("acl grant: exit %d: %s", code, errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runSession uploads bob's input (which starts the run) and waits for the
// session's outcome.
func (s *sealedNet) runSession(as *sclient.AttestedSession) *sclient.Status {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := as.UploadInput(ctx, s.bob, "go", []byte("go")); err != nil {
		s.t.Fatal(err)
	}
	st, err := as.Wait(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return st
}

// wantRan checks the run finished and printed the canary's SHA-256: the
// worker had the program's plaintext.
func (s *sealedNet) wantRan(as *sclient.AttestedSession, st *sclient.Status) {
	s.t.Helper()
	if st.Reason != "" || st.Report == nil {
		s.t.Fatalf("session %s: %s\n%s", as.ID(), st.Reason, s.node.Log())
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got, err := as.Result(ctx, s.dave, "stdout")
	if err != nil {
		s.t.Fatal(err)
	}
	want := sha256.Sum256(s.canary)
	if strings.TrimSpace(string(got)) != hex.EncodeToString(want[:]) {
		s.t.Fatalf("the program printed %q, want the canary's sha256", got)
	}
}

// wantRefused checks the run was refused, its reason saying frag.
func (s *sealedNet) wantRefused(as *sclient.AttestedSession, st *sclient.Status, frag string) {
	s.t.Helper()
	if st.Report != nil || !strings.Contains(st.Reason, frag) {
		s.t.Fatalf("session %s: report %v, reason %q; want the run refused saying %q", as.ID(), st.Report != nil, st.Reason, frag)
	}
}

// needles are the secrets that must not outlive the run outside the
// worker: the canary, the content key, every broker's share.
func (s *sealedNet) needles() map[string][]byte {
	n := map[string][]byte{"canary": s.canary, "content key": s.key[:]}
	for _, sh := range s.shares {
		n[fmt.Sprintf("share %d", sh.Index)] = sh.Value[:]
	}
	return n
}

// TestSealedProgramOnNode runs a sealed program on a real node, every
// component a process of its own, and checks what is left afterwards and
// every way the node refuses to run it.
func TestSealedProgramOnNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a ledger, a blob store, three brokers and a node")
	}
	s := newSealedNet(t)
	sha := s.sum.SHA256

	t.Run("canary_absent_after_the_run", func(t *testing.T) {
		as := s.session(s.sp, sha)
		s.grantSession(as)
		s.wantRan(as, s.runSession(as))
		pid := s.node.Cmd.Process.Pid
		// The worker that held the plaintext has exited: with no warm
		// workers, the node has no process left under it once the run
		// is over.
		var kids []int
		deadline := time.Now().Add(30 * time.Second)
		for kids = descendants(pid); len(kids) > 0 && time.Now().Before(deadline); kids = descendants(pid) {
			time.Sleep(50 * time.Millisecond)
		}
		if len(kids) > 0 {
			t.Errorf("processes %v still run under the node after the run", kids)
		}
		// The node's memory as a core dump would hold it: every readable
		// mapping. The session's id is there (a control: the scan can
		// find what the node does hold); nothing of the program or key.
		needles := s.needles()
		needles["control: session id"] = []byte(as.ID())
		for _, p := range append([]int{pid}, kids...) {
			found, scanned, err := scanMemory(p, needles)
			if err != nil {
				t.Fatalf("reading the memory of process %d: %v", p, err)
			}
			t.Logf("process %d: %d MiB of readable memory scanned", p, scanned>>20)
			if p == pid && found["control: session id"] == "" {
				t.Fatalf("the scan of the node's memory did not find the session id it holds")
			}
			for name, where := range found {
				if !strings.HasPrefix(name, "control") {
					t.Errorf("process %d holds the %s after the run, in %s", p, name, where)
				}
			}
		}
		s.wantFilesClean(t)
	})

	t.Run("upload_of_the_sealed_program_refused", func(t *testing.T) {
		as := s.session(s.sp, sha)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := as.UploadProgram(ctx, s.bob, "canary.wasm", s.wasm)
		if err == nil || !strings.Contains(err.Error(), "is sealed") {
			t.Fatalf("uploading the sealed program: %v; want it refused as sealed", err)
		}
	})

	t.Run("revoked_grant_refused_by_the_ledger", func(t *testing.T) {
		as := s.session(s.sp, sha)
		g := s.grantSession(as)
		r := mustRun(t, s.bin, "acl", "revoke", "--ledger", s.ledgerURL, "--key", s.ownerFile, "--index", strconv.FormatUint(g, 10))
		s.wantRefused(as, s.runSession(as), fmt.Sprintf("grant %d was revoked by entry %s", g, r))
	})

	t.Run("policy_disagrees_with_the_artifact", func(t *testing.T) {
		ok, err := keys.Generate()
		if err != nil {
			t.Fatal(err)
		}
		other := ok.Public().SigningString()
		for _, c := range []struct {
			name, sha, want string
			mutate          func(*policy.SealedProgram)
		}{
			{"other_brokers", sha, "is shared among brokers", func(sp *policy.SealedProgram) { sp.Brokers[2].Key = other }},
			{"other_threshold", sha, "needs 2 shares, the policy says 3", func(sp *policy.SealedProgram) { sp.Threshold = 3 }},
			{"another_program", strings.Repeat("ab", 32), "is a program with sha256 " + sha, func(*policy.SealedProgram) {}},
		} {
			t.Run(c.name, func(t *testing.T) {
				sp := s.sp
				sp.Brokers = append([]policy.SealedBroker(nil), s.sp.Brokers...)
				c.mutate(&sp)
				as := s.session(sp, c.sha)
				s.grantSession(as)
				s.wantRefused(as, s.runSession(as), c.want)
			})
		}
	})

	t.Run("run_right_after_creation_waits_for_the_commit", func(t *testing.T) {
		// A grant to the node's class exists before the session: its
		// input arrives at once, so the run may start before the
		// session.created entry is committed; the node waits for it
		// before it asks the brokers, whose ledger would otherwise not
		// know the session.
		first := s.session(s.sp, sha)
		g := s.appendEntry(s.owner.Signer(), acl.KindGranted, acl.Grant{Artifact: s.sp.Digest, Owner: s.sp.Owner,
			Grantee:  acl.Grantee{Class: "software", Measurements: []string{hex.EncodeToString(first.Claims().Measurement)}},
			NotAfter: acl.FormatTime(time.Now().Add(10 * time.Minute)), MaxUses: 100})
		defer s.appendEntry(s.owner.Signer(), acl.KindRevoked, acl.Revocation{Grant: &g})
		for range 3 {
			as := s.session(s.sp, sha)
			s.wantRan(as, s.runSession(as))
		}
	})

	t.Run("k_of_n_brokers_reachable", func(t *testing.T) {
		s.brokers[2].stop()
		as := s.session(s.sp, sha)
		s.grantSession(as)
		s.wantRan(as, s.runSession(as))
		s.brokers[1].stop()
		as = s.session(s.sp, sha)
		s.grantSession(as)
		s.wantRefused(as, s.runSession(as), "1 of the 2 shares needed")
	})

	// After every run and refusal, and after the node has stopped:
	// nothing of the program or its key on disk.
	s.node.Stop()
	s.wantFilesClean(t)
}

// wantFilesClean walks every file of the node's data directory (the
// compilation cache, the blob cache, session state, logs) and its
// temporary directory for the secrets. The ciphertext, kept in the blob
// cache, is the control: the walk does read what the node stored.
func (s *sealedNet) wantFilesClean(t *testing.T) {
	t.Helper()
	sawCiphertext := false
	needles := s.needles()
	for _, root := range []string{s.nodeDir, s.tmpDir} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			sawCiphertext = sawCiphertext || bytes.Contains(b, s.ct[len(s.ct)-64:])
			for name, n := range needles {
				if bytes.Contains(b, n) {
					t.Errorf("%s holds the %s", path, name)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !sawCiphertext {
		t.Fatalf("the walk of %s found not even the ciphertext the node fetched", s.nodeDir)
	}
}

// descendants lists the processes under pid (children, theirs, …).
func descendants(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid …: comm may hold spaces and parentheses.
		rest := string(b[bytes.LastIndexByte(b, ')')+1:])
		f := strings.Fields(rest)
		if len(f) > 1 {
			parent[p], _ = strconv.Atoi(f[1])
		}
	}
	var out []int
	var walk func(int)
	walk = func(q int) {
		for p, pp := range parent {
			if pp == q {
				out = append(out, p)
				walk(p)
			}
		}
	}
	walk(pid)
	return out
}

// scanMemory reads every readable mapping of process pid through
// /proc/PID/mem — what a core dump of it would hold — and reports, for
// each needle found, the first mapping holding it, and how many bytes it
// read.
func scanMemory(pid int, needles map[string][]byte) (map[string]string, int64, error) {
	maps, err := os.Open(fmt.Sprintf("/proc/%d/maps", pid))
	if err != nil {
		return nil, 0, err
	}
	defer maps.Close()
	mem, err := os.Open(fmt.Sprintf("/proc/%d/mem", pid))
	if err != nil {
		return nil, 0, err
	}
	defer mem.Close()
	longest := 0
	for _, n := range needles {
		longest = max(longest, len(n))
	}
	found := map[string]string{}
	var scanned int64
	sc := bufio.NewScanner(maps)
	buf := make([]byte, 4<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[1][0] != 'r' {
			continue
		}
		name := ""
		if len(f) >= 6 {
			name = f[5]
		}
		if name == "[vvar]" || name == "[vsyscall]" || name == "[vvar_vclock]" {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			return nil, scanned, fmt.Errorf("maps line %q", sc.Text())
		}
		// Chunks overlap by the longest needle, so none is missed at a
		// boundary.
		for off := start; off < end; {
			n := min(uint64(len(buf)), end-off)
			k, _ := mem.ReadAt(buf[:n], int64(off))
			if k <= 0 {
				break // a mapping the kernel will not read (a guard page)
			}
			scanned += int64(k)
			for nm, needle := range needles {
				if found[nm] == "" && bytes.Contains(buf[:k], needle) {
					found[nm] = fmt.Sprintf("%s %s", f[0], name)
				}
			}
			if uint64(k) < n || off+n >= end {
				break
			}
			off += n - uint64(longest)
		}
	}
	return found, scanned, sc.Err()
}
