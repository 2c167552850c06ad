package cli

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/internal/testnet"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
)

// TestReplicatedSessionsOnTestNetwork runs policies with "replicas": 3 on
// a loopback network of separate processes — a validator and five nodes:
// n1 and n4 of one organisation, n2, n3 and n5 of three others, n5
// rigged to commit a wrong result and to release results before the
// replicas agree. The principals type the single-session commands:
//
//   - an honest set (n1, n2, n3; n4 is passed over, its organisation
//     already has a replica) agrees and the reader gets the result;
//   - a set with n5: the reader is refused, naming n5 and its
//     organisation, although n5 itself hands the result out; an honest
//     member's node refuses too; the discrepancy is a ledger entry;
//   - a policy whose nodes come from two organisations is refused for
//     that reason by the client, and a set naming two nodes of one
//     organisation by the ledger.
func TestReplicatedSessionsOnTestNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a validator and five nodes; skipped with -short")
	}
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	specs := testnet.Nodes(5, []string{"software"})
	for i, org := range []string{"org1", "org2", "org3", "org1", "org4"} {
		specs[i].Organisation = org
	}
	specs[4].Args = []string{"--replica-corrupt", "--replica-release-early"}
	dir := t.TempDir()
	nw, err := testnet.Start(ctx, testnet.Options{Dir: filepath.Join(dir, "net"), Bin: bin, Nodes: specs,
		NoBroker: true, NoBlobStore: true, NoDispatcher: true, OfferTTL: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer nw.Stop()
	info := nw.Info()
	defer func() {
		if t.Failed() {
			for _, n := range info.Nodes {
				b, _ := os.ReadFile(n.Log)
				t.Logf("%s log:\n%s", n.Name, tail(string(b), 3000))
			}
		}
	}()
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config")) // the principals' pinned ledger state
	at := func(n string) string { return filepath.Join(dir, n) }
	for _, p := range []string{"alice", "bob", "dave"} {
		mustCLI(t, "key", "new", "--out", at(p+".key"))
	}
	os.WriteFile(at("a"), []byte("AB"), 0o600)
	os.WriteFile(at("b"), []byte("C"), 0o600)
	makePolicy := func(name string, nodes ...int) string {
		args := []string{"policy", "new", "--out", at(name), "--name", name, "--replicas", "3",
			"--principal", at("alice.key"), "--principal", at("bob.key"), "--principal", at("dave.key"),
			"--program", "alice:sum.wasm=../../node/testdata/sum.wasm", "--input", "bob:a", "--input", "bob:b", "--output", "dave:sum"}
		for _, i := range nodes {
			args = append(args, "--platform-key", info.Nodes[i].KeyFile)
		}
		mustCLI(t, args...)
		return at(name)
	}
	node := func(i int) string { return info.Nodes[i].URL }
	run := func(pol string, via int) string {
		set := strings.TrimSpace(mustCLI(t, "session", "create", "--node", node(via), "--policy", pol, "--key", at("alice.key")))
		sess := []string{"--node", node(via), "--session", set, "--policy", pol}
		mustCLI(t, append([]string{"session", "upload", "--key", at("alice.key"), "--program", "sum.wasm=../../node/testdata/sum.wasm"}, sess...)...)
		mustCLI(t, append([]string{"session", "upload", "--key", at("bob.key"), "--input", "a=" + at("a")}, sess...)...)
		mustCLI(t, append([]string{"session", "upload", "--key", at("bob.key"), "--input", "b=" + at("b")}, sess...)...)
		return set
	}
	lc := nw.Ledger()

	// An honest set agrees; n4 (org1, like n1) is passed over.
	good := makePolicy("good.json", 0, 1, 2, 3)
	set := run(good, 0)
	rs, _, err := lc.ReplicaSet(ctx, set)
	if err != nil {
		t.Fatal(err)
	}
	var members []string
	for _, m := range rs.Members {
		members = append(members, m.Node)
	}
	slices.Sort(members[1:]) // the node asked first, then the others by key
	want := []string{info.Nodes[1].PlatformKey, info.Nodes[2].PlatformKey}
	slices.Sort(want)
	if want = append([]string{info.Nodes[0].PlatformKey}, want...); !slices.Equal(members, want) {
		t.Fatalf("members %v, want n1, n2, n3 %v", members, want)
	}
	code, out, errOut := runCLI(t, "session", "result", "--node", node(1), "--session", set, "--policy", good, "--key", at("dave.key"),
		"--output", "sum", "--out", at("sum"), "--wait", "60s")
	if code != 0 {
		t.Fatalf("result: exit %d\n%s%s", code, out, errOut)
	}
	if b, _ := os.ReadFile(at("sum")); string(b) != "198\n" {
		t.Fatalf("sum %q, want 198", b)
	}
	if !strings.Contains(errOut, "3 replicas of distinct organisations agreed") {
		t.Fatalf("result did not say the replicas agreed:\n%s", errOut)
	}

	// A set with the rigged n5: refused, naming it.
	bad := makePolicy("bad.json", 0, 1, 4)
	set = run(bad, 4)
	code, _, errOut = runCLI(t, "session", "result", "--node", node(4), "--session", set, "--policy", bad, "--key", at("dave.key"),
		"--output", "sum", "--out", at("bad-sum"), "--wait", "60s")
	if code != 1 || !strings.Contains(errOut, "replicas disagree") || !strings.Contains(errOut, info.Nodes[4].PlatformKey+" (organisation "+info.Organisations[3].Key+")") {
		t.Fatalf("result of a disagreeing set: exit %d, want 1 naming n5 and org4:\n%s", code, errOut)
	}
	if _, err := os.Stat(at("bad-sum")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused result was written: %v", err)
	}
	// n5 released its result all the same; only the reader's check stops it.
	pol, err := policy.Load(bad)
	if err != nil {
		t.Fatal(err)
	}
	dave, err := keys.Load(at("dave.key"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := client.OpenReplicas(ctx, lc, set, pol, client.WithPlatformKeys(softwarePlatformKeys(pol)...))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	atts, err := r.Attest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Agreement(ctx, "", atts); !errors.Is(err, client.ErrReplicasDisagree) {
		t.Fatalf("agreement of a disagreeing set: %v", err)
	}
	for i, m := range r.Members {
		_, err := atts[i].Result(ctx, dave, "sum")
		switch {
		case m.Node == info.Nodes[4].PlatformKey && err != nil:
			t.Fatalf("the early-releasing node refused: %v", err)
		case m.Node != info.Nodes[4].PlatformKey && (err == nil || !strings.Contains(err.Error(), "replicas disagree")):
			t.Fatalf("honest replica %s released or refused for another reason: %v", m.Node, err)
		}
	}
	// The discrepancy is on the ledger, naming every result.
	deadline := time.Now().Add(30 * time.Second)
	for {
		rs, txs, err := lc.ReplicaSet(ctx, set)
		if err != nil {
			t.Fatal(err)
		}
		if rs.Discrepancy != 0 {
			se, err := verify.DecodeEntry(txs[rs.Discrepancy])
			if err != nil || se.Entry.Kind != ledger.KindReplicaDiscrepancy {
				t.Fatalf("discrepancy entry %d: %v %+v", rs.Discrepancy, err, se)
			}
			var body struct {
				Results map[string]string `json:"results"`
			}
			json.Unmarshal(se.Entry.Body, &body)
			if len(body.Results) != 3 || body.Results[info.Nodes[4].PlatformKey] == body.Results[info.Nodes[0].PlatformKey] {
				t.Fatalf("discrepancy results %v", body.Results)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no replica.discrepancy entry within 30 s")
		}
		time.Sleep(500 * time.Millisecond)
	}

	// Two replicas of one organisation: refused by the client, and by
	// the ledger.
	sameOrg := makePolicy("same-org.json", 0, 3, 1)
	code, _, errOut = runCLI(t, "session", "create", "--node", node(0), "--policy", sameOrg, "--key", at("alice.key"))
	if code != 1 || !strings.Contains(errOut, "come from 2 organisation(s)") || !strings.Contains(errOut, "one organisation is one replica") {
		t.Fatalf("create with two nodes of one organisation: exit %d\n%s", code, errOut)
	}
	n1, err := keys.Load(info.Nodes[0].KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	se, err := verify.NewEntry(n1.Signer(), ledger.KindSessionEvent, map[string]any{"event": "session.created", "session": strings.Repeat("ab", 16),
		"policy_hash": strings.Repeat("cd", 32), "replica_set": strings.Repeat("ef", 16),
		"replica_members": []string{info.Nodes[0].PlatformKey, info.Nodes[3].PlatformKey, info.Nodes[1].PlatformKey}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = lc.Append(ctx, se)
	var rej *verify.RejectedError
	if !errors.As(err, &rej) || rej.Code != verify.CodeUnauthorized || !strings.Contains(err.Error(), "one organisation is one replica") {
		t.Fatalf("the ledger took a set of two nodes of one organisation: %v", err)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
