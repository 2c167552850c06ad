// Package replicas benchmarks replicated sessions against a single one on
// the loopback test network (package internal/testnet: a validator and
// three software nodes of three organisations, each its own process).
// Figures are in docs/piee.md ("Cost"). It contains no production code.
package replicas

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/bench/internal/measure"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/testbin"
	"github.com/cloisterhq/cloister/internal/testnet"
	"github.com/cloisterhq/cloister/keys"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/policy"
)

// BenchmarkSession runs the same session — the sum program (node/testdata),
// two inputs, one output, deterministic — as one replica and as a set of
// three, each op from creation to the reader holding the result: the
// creator's client creates the session(s), the provider and the data
// provider attest and upload, the reader attests, (for the set) checks
// the agreement on the ledger with inclusion proofs, and fetches. It
// reports wall time per op (ns/op) and CPU time per op — this process
// (the principals' clients) plus every node's and the validator's process
// tree — as cpu-ms/op.
//
//	go test ./bench/replicas -run - -bench . -benchtime 5x -timeout 30m
func BenchmarkSession(b *testing.B) {
	bin, err := testbin.Cloister()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	dir := b.TempDir()
	b.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	nw, err := testnet.Start(ctx, testnet.Options{Dir: filepath.Join(dir, "net"), Bin: bin, Nodes: testnet.Nodes(3, []string{"software"}),
		NoBroker: true, NoBlobStore: true, NoDispatcher: true, OfferTTL: 10 * time.Minute})
	if err != nil {
		b.Fatal(err)
	}
	defer nw.Stop()
	info := nw.Info()
	prog, err := os.ReadFile("../../node/testdata/sum.wasm")
	if err != nil {
		b.Fatal(err)
	}
	var pk [3]*keys.PrivateKey
	for i := range pk {
		if pk[i], err = keys.Generate(); err != nil {
			b.Fatal(err)
		}
	}
	var nodeKeys []string
	for _, n := range info.Nodes {
		nodeKeys = append(nodeKeys, n.PlatformKey)
	}
	pids := []int{nw.PID(info.Validators[0].Name)}
	for _, n := range info.Nodes {
		pids = append(pids, nw.PID(n.Name))
	}
	cpu := func() time.Duration {
		t := measure.SelfCPU()
		for _, p := range pids {
			t += measure.TreeCPU(p)
		}
		return t
	}
	lc := nw.Ledger()
	for _, n := range []int{1, 3} {
		doc := sumPolicy(b, n, nodeKeys, pk, prog)
		pol, err := policy.Parse(doc)
		if err != nil {
			b.Fatal(err)
		}
		name := "single"
		if n > 1 {
			name = "replicas-3"
		}
		b.Run(name, func(b *testing.B) {
			run := func() {
				if err := session(ctx, info.Nodes[0].URL, lc, doc, pol, pk, prog); err != nil {
					b.Fatal(err)
				}
			}
			run() // warm: compiled program cached on every node
			c0, t0 := cpu(), time.Now()
			b.ResetTimer()
			for range b.N {
				run()
			}
			b.StopTimer()
			b.ReportMetric(float64((cpu()-c0).Milliseconds())/float64(b.N), "cpu-ms/op")
			b.ReportMetric(float64(time.Since(t0).Milliseconds())/float64(b.N), "wall-ms/op")
		})
	}
}

// session runs one session (or replica set) of the policy from creation
// to the result, as the principals' clients would.
func session(ctx context.Context, nodeURL string, lc *lclient.Client, doc []byte, pol *policy.Policy, pk [3]*keys.PrivateKey, prog []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	opts := []client.Option{client.WithPlatformKeys(platformKeys(pol)...)}
	c, err := client.Dial(ctx, nodeURL, opts...)
	if err != nil {
		return err
	}
	defer c.Close()
	var atts []*client.AttestedSession
	var r *client.Replicas
	if pol.ReplicaCount() > 1 {
		if r, err = client.CreateReplicas(ctx, c, lc, doc, pol, opts...); err != nil {
			return err
		}
		defer r.Close()
		if atts, err = r.Attest(ctx); err != nil {
			return err
		}
	} else {
		id, err := c.CreateSession(ctx, doc)
		if err != nil {
			return err
		}
		as, err := c.Attest(ctx, id, pol)
		if err != nil {
			return err
		}
		atts = []*client.AttestedSession{as}
	}
	for _, as := range atts {
		if _, err := as.UploadProgram(ctx, pk[0], "sum.wasm", prog); err != nil {
			return err
		}
		if _, err := as.UploadInput(ctx, pk[1], "a", []byte("AB")); err != nil {
			return err
		}
		if _, err := as.UploadInput(ctx, pk[1], "b", []byte("C")); err != nil {
			return err
		}
	}
	if r != nil {
		for {
			_, err := r.Agreement(ctx, "", atts)
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return err
			case <-time.After(200 * time.Millisecond):
			}
		}
	} else if _, err := atts[0].Wait(ctx); err != nil {
		return err
	}
	for {
		out, err := atts[0].Result(ctx, pk[2], "sum")
		if err == nil {
			if string(out) != "198\n" {
				return errorString("wrong sum " + string(out))
			}
			break
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
	for _, as := range atts {
		as.Close(ctx, pk[0])
		as.CloseIdleConnections()
	}
	return nil
}

type errorString string

func (e errorString) Error() string { return string(e) }

func platformKeys(pol *policy.Policy) []ed25519.PublicKey {
	iso, _ := pol.Isolate("software")
	var out []ed25519.PublicKey
	for _, k := range iso.PlatformKeys {
		if p, err := keys.ParseSigningKey(k); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// sumPolicy is the sum program's policy, for n replicas, trusting the
// given nodes: alice provides the program, bob the inputs, dave reads.
func sumPolicy(b *testing.B, n int, nodeKeys []string, pk [3]*keys.PrivateKey, prog []byte) []byte {
	sum := sha256.Sum256(prog)
	p := map[string]any{
		"version": 1, "name": "sum", "deterministic": true, "replicas": n,
		"principals": []any{
			map[string]any{"id": "alice", "signing_key": pk[0].Public().SigningString(), "roles": []string{"program-provider"}},
			map[string]any{"id": "bob", "signing_key": pk[1].Public().SigningString(), "roles": []string{"data-provider"}},
			map[string]any{"id": "dave", "signing_key": pk[2].Public().SigningString(), "sealing_key": pk[2].Public().SealingString(), "roles": []string{"result-reader"}},
		},
		"programs": []any{map[string]any{"name": "sum.wasm", "sha256": hex.EncodeToString(sum[:]), "provider": "alice"}},
		"inputs":   []any{map[string]any{"name": "a", "provider": "bob"}, map[string]any{"name": "b", "provider": "bob"}},
		"outputs":  []any{map[string]any{"name": "sum", "readers": []string{"dave"}}},
		"isolates": []any{map[string]any{"class": "software", "platform_keys": nodeKeys}},
		"expires":  time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
	}
	doc, err := json.Marshal(p)
	if err != nil {
		b.Fatal(err)
	}
	return doc
}
