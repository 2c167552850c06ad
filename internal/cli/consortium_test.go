package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/loopback"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
)

// privateParts returns the private key values of the key files in dir, as
// they appear in those files (base64), to look for them elsewhere.
func privateParts(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, f := range []string{ledger.NodeKeyFile, ledger.ValidatorKeyFile} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		var k struct {
			PrivKey struct {
				Value string `json:"value"`
			} `json:"priv_key"`
		}
		if err := json.Unmarshal(b, &k); err != nil || len(k.PrivKey.Value) < 40 {
			t.Fatalf("%s: no private key value (%v)", f, err)
		}
		// The first 32 bytes (the seed) in base64 are the first 43 characters.
		out = append(out, k.PrivKey.Value, k.PrivKey.Value[:40])
	}
	return out
}

func freeLoopbackAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs, err := loopback.Addrs(n)
	if err != nil {
		t.Fatal(err)
	}
	return addrs
}

// TestConsortiumEndToEnd: three organisations make their keys apart, one
// writes the genesis from their member files, each lays out its validator
// home from its own keys and the shared genesis, and the three validators
// form a working ledger. No file that leaves an organisation holds a
// private key.
func TestConsortiumEndToEnd(t *testing.T) {
	const n = 3
	base := t.TempDir()
	addrs := freeLoopbackAddrs(t, 2*n)
	var memberPaths, orgDirs []string
	for i := range n {
		org := fmt.Sprintf("org%d", i+1)
		dir := filepath.Join(base, org)
		code, out, errOut := runCLI(t, "consortium", "keygen", "--org", org, "--p2p-address", addrs[i], "--out", dir)
		if code != 0 || strings.TrimSpace(out) != filepath.Join(dir, org+".member.json") {
			t.Fatalf("keygen %s: exit %d, %q %s", org, code, out, errOut)
		}
		fi, err := os.Stat(filepath.Join(dir, "keys", ledger.ValidatorKeyFile))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("validator key file mode %v (%v), want 0600", fi.Mode(), err)
		}
		memberPaths = append(memberPaths, filepath.Join(dir, org+".member.json"))
		orgDirs = append(orgDirs, dir)
	}
	// Keys are never overwritten.
	if code, _, errOut := runCLI(t, "consortium", "keygen", "--org", "org1", "--p2p-address", addrs[0], "--out", orgDirs[0]); code != 1 || !strings.Contains(errOut, "never overwritten") {
		t.Fatalf("second keygen: exit %d, %s", code, errOut)
	}

	cdir := filepath.Join(base, "consortium")
	args := []string{"consortium", "init", "--orgs", "3", "--out", cdir, "--chain-id", "three-orgs"}
	for _, p := range memberPaths {
		args = append(args, "--member", p)
	}
	code, out, errOut := runCLI(t, args...)
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, errOut)
	}
	want := []string{"consortium.json", "genesis.json", "values-org1.yaml", "values-org2.yaml", "values-org3.yaml"}
	entries, _ := os.ReadDir(cdir)
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, " ") != strings.Join(want, " ") || strings.Count(out, "\n") != len(want) {
		t.Fatalf("init wrote %v, printed %q; want %v", got, out, want)
	}
	// Nothing written for the consortium, nor any member file, holds a
	// private key of any organisation.
	var secrets []string
	for _, d := range orgDirs {
		secrets = append(secrets, privateParts(t, filepath.Join(d, "keys"))...)
	}
	shared := append([]string{}, memberPaths...)
	for _, w := range want {
		shared = append(shared, filepath.Join(cdir, w))
	}
	for _, f := range shared {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range secrets {
			if strings.Contains(string(b), s) {
				t.Fatalf("%s holds a private key", f)
			}
		}
	}
	var summary struct {
		ChainID string       `json:"chain_id"`
		Members []memberFile `json:"members"`
	}
	b, _ := os.ReadFile(filepath.Join(cdir, "consortium.json"))
	if err := json.Unmarshal(b, &summary); err != nil || summary.ChainID != "three-orgs" || len(summary.Members) != n {
		t.Fatalf("consortium.json: %v %s", err, b)
	}
	v1, _ := os.ReadFile(filepath.Join(cdir, "values-org1.yaml"))
	for _, m := range summary.Members[1:] {
		if !strings.Contains(string(v1), "- '"+m.NodeID+"@"+m.P2PAddress+"'") {
			t.Fatalf("values-org1.yaml lacks peer %s:\n%s", m.Org, v1)
		}
	}
	if strings.Contains(string(v1), summary.Members[0].NodeID) {
		t.Fatalf("values-org1.yaml lists itself as a peer")
	}

	// Each organisation lays out its home and starts its validator.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var urls []string
	for i := range n {
		home := filepath.Join(orgDirs[i], "home")
		args := []string{"consortium", "validator-home", "--home", home, "--keys", filepath.Join(orgDirs[i], "keys"),
			"--genesis", filepath.Join(cdir, "genesis.json"), "--p2p-listen", addrs[i], "--api-listen", addrs[n+i], "--validators", "3"}
		for j, m := range summary.Members {
			if j != i {
				args = append(args, "--peer", m.NodeID+"@"+m.P2PAddress)
			}
		}
		if code, out, errOut := runCLI(t, args...); code != 0 || !strings.Contains(out, summary.Members[i].NodeID) {
			t.Fatalf("validator-home %d: exit %d %q %s", i, code, out, errOut)
		}
		// Again: it changes nothing it was not told to.
		if code, _, errOut := runCLI(t, args...); code != 0 {
			t.Fatalf("validator-home %d again: exit %d %s", i, code, errOut)
		}
		startCtx, startCancel := context.WithTimeout(ctx, 2*time.Minute)
		v, err := ledger.StartValidator(startCtx, home, ledger.StartOptions{})
		startCancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { v.Close() })
		urls = append(urls, v.APIURL())
	}
	k, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(base, "alice.key")
	if err := k.Save(keyFile); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = runCLI(t, "ledger", "append", "--ledger", urls[1], "--key", keyFile, "--kind", "note", "--body", `{"text":"three organisations"}`)
	if code != 0 {
		t.Fatalf("append through org2: exit %d %s", code, errOut)
	}
	c3, err := client.New(urls[2])
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := c3.Status(ctx)
		if err == nil && st.Size >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("org3's validator never saw the entry: %v %+v", err, st)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A home belongs to one chain; a genesis without this key is refused.
	other := filepath.Join(base, "other")
	if code, _, errOut := runCLI(t, "consortium", "init", "--orgs", "2", "--out", other); code != 0 || !strings.Contains(errOut, "rehearsal") {
		t.Fatalf("rehearsal init: exit %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, "consortium", "validator-home", "--home", filepath.Join(base, "fresh"), "--keys", filepath.Join(orgDirs[0], "keys"),
		"--genesis", filepath.Join(other, "genesis.json"), "--p2p-listen", "127.0.0.1:1", "--api-listen", "127.0.0.1:2"); code != 1 || !strings.Contains(errOut, "does not list this validator's key") {
		t.Fatalf("foreign genesis: exit %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, "consortium", "validator-home", "--home", filepath.Join(other, "orgs", "org1", "home2"), "--keys", filepath.Join(other, "orgs", "org1", "keys"),
		"--genesis", filepath.Join(other, "genesis.json"), "--p2p-listen", "127.0.0.1:1", "--api-listen", "127.0.0.1:2"); code != 0 {
		t.Fatalf("rehearsal home: exit %d %s", code, errOut)
	}
	// A different genesis of a chain with the same key set is still another chain.
	regen := filepath.Join(base, "regen")
	if code, _, errOut := runCLI(t, "consortium", "init", "--orgs", "2", "--out", regen, "--member", filepath.Join(other, "orgs", "org1", "org1.member.json"),
		"--member", filepath.Join(other, "orgs", "org2", "org2.member.json")); code != 0 {
		t.Fatalf("re-init: exit %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(t, "consortium", "validator-home", "--home", filepath.Join(other, "orgs", "org1", "home2"), "--keys", filepath.Join(other, "orgs", "org1", "keys"),
		"--genesis", filepath.Join(regen, "genesis.json"), "--p2p-listen", "127.0.0.1:1", "--api-listen", "127.0.0.1:2"); code != 1 || !strings.Contains(errOut, "belongs to one chain") {
		t.Fatalf("another genesis on a used home: exit %d %s", code, errOut)
	}
}

func TestConsortiumInitRefusals(t *testing.T) {
	base := t.TempDir()
	_, out, _ := runCLI(t, "consortium", "keygen", "--org", "org1", "--p2p-address", "v.org1.example:26656", "--out", filepath.Join(base, "org1"))
	good := strings.TrimSpace(out)
	b, _ := os.ReadFile(good)
	write := func(name, content string) string {
		p := filepath.Join(base, name)
		os.WriteFile(p, []byte(content), 0o644)
		return p
	}
	var m memberFile
	json.Unmarshal(b, &m)
	dup := m
	dup.Org = "org2"
	dupB, _ := json.Marshal(dup)
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"unknown field", []string{"--orgs", "1", "--member", write("u.json", strings.Replace(string(b), `"org"`, `"extra": 1, "org"`, 1))}, 1, "unknown field"},
		{"bad key", []string{"--orgs", "1", "--member", write("k.json", strings.Replace(string(b), m.PubKey, "ed25519:AAAA", 1))}, 1, "validator_pub_key"},
		{"bad address", []string{"--orgs", "1", "--member", write("a.json", strings.Replace(string(b), m.P2PAddress, "nohost", 1))}, 1, "p2p_address"},
		{"same key twice", []string{"--orgs", "2", "--member", good, "--member", write("d.json", string(dupB))}, 1, "share key:"},
		{"count", []string{"--orgs", "3", "--member", good}, 2, "--orgs 3 but 1"},
		{"huge", []string{"--orgs", "1", "--member", write("h.json", strings.Repeat(" ", maxMemberFile+1))}, 1, "larger than"},
		{"orgs", []string{"--orgs", "0"}, 2, "want 1 to 100"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"consortium", "init", "--out", filepath.Join(base, fmt.Sprintf("out%d", i))}, c.args...)
			code, _, errOut := runCLI(t, args...)
			if code != c.code || !strings.Contains(errOut, c.stderr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, errOut, c.code, c.stderr)
			}
		})
	}
}
