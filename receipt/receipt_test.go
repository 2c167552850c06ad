package receipt_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/api/protocol"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/receipt"
)

// testdata/demo-receipt.json is the receipt of a session of `cloister
// demo`, fetched with `cloister receipt get --ledger-state`;
// demo-ledger-state.json is the ledger state dave verified in it.
func load(t testing.TB) ([]byte, *receipt.Trust) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "demo-receipt.json"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := lclient.LoadState(filepath.Join("testdata", "demo-ledger-state.json"))
	if err != nil || st == nil {
		t.Fatalf("ledger state: %v", err)
	}
	return b, &receipt.Trust{ValidatorSet: st.Validators, Checkpoint: []byte(st.Checkpoint)}
}

func parse(t *testing.T, b []byte) *receipt.Receipt {
	t.Helper()
	r, err := receipt.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerifyDemoReceipt(t *testing.T) {
	b, trust := load(t)
	res, err := receipt.Verify(context.Background(), parse(t, b), trust)
	if err != nil {
		t.Fatal(err)
	}
	if !res.Valid || !res.Pinned || len(res.Checks) != 9 {
		t.Fatalf("valid %v pinned %v, %d checks: %+v", res.Valid, res.Pinned, len(res.Checks), res.Checks)
	}
	// Without a trust root it is consistent, and says it proves nothing more.
	res, err = receipt.Verify(context.Background(), parse(t, b), nil)
	if err != nil || res.Pinned || len(res.Notes) == 0 {
		t.Fatalf("unpinned: %v, pinned %v, notes %q", err, res.Pinned, res.Notes)
	}
}

// Each forgery fails, at the check that catches it.
func TestVerifyRefusesForgeries(t *testing.T) {
	b, trust := load(t)
	otherKey := func() string {
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		return protocol.FormatEd25519Key(pub)
	}()
	for _, tc := range []struct {
		name   string
		tamper func(r *receipt.Receipt, tr *receipt.Trust)
		check  string
	}{
		{"another validator set", func(r *receipt.Receipt, _ *receipt.Trust) { r.Ledger.ValidatorSet.Validators[0].Power++ }, receipt.CheckTrustRoot},
		{"a checkpoint with another root", func(r *receipt.Receipt, _ *receipt.Trust) {
			l := strings.Split(r.Ledger.Checkpoint, "\n")
			l[2] = "AAAA" + l[2][4:]
			r.Ledger.Checkpoint = strings.Join(l, "\n")
		}, receipt.CheckCheckpoint},
		{"an entry's proof", func(r *receipt.Receipt, _ *receipt.Trust) { r.Ledger.Entries[3].Proof[0][0] ^= 1 }, receipt.CheckEntries},
		{"an entry's text", func(r *receipt.Receipt, _ *receipt.Trust) {
			r.Ledger.Entries[5].Tx = strings.Replace(r.Ledger.Entries[5].Tx, "result.json", "result.jsoN", 1)
		}, receipt.CheckEntries},
		{"an entry left out", func(r *receipt.Receipt, _ *receipt.Trust) { r.Ledger.Entries = r.Ledger.Entries[1:] }, receipt.CheckNode},
		{"another node", func(r *receipt.Receipt, _ *receipt.Trust) { r.Node.PlatformKey = otherKey }, receipt.CheckNode},
		{"another class", func(r *receipt.Receipt, _ *receipt.Trust) { r.Node.IsolateClass = "sev-snp" }, receipt.CheckNode},
		{"the policy", func(r *receipt.Receipt, _ *receipt.Trust) {
			r.Policy = strings.Replace(r.Policy, "256MiB", "512MiB", 1)
		}, receipt.CheckPolicy},
		{"the evidence", func(r *receipt.Receipt, _ *receipt.Trust) { r.Evidence.Data[len(r.Evidence.Data)/2] ^= 1 }, receipt.CheckEvidence},
		{"the HPKE key", func(r *receipt.Receipt, _ *receipt.Trust) { r.HPKEPublicKey[0] ^= 1 }, receipt.CheckEvidence},
		{"the session certificate", func(r *receipt.Receipt, _ *receipt.Trust) {
			r.SessionCertificate[len(r.SessionCertificate)-3] ^= 1
		}, receipt.CheckEvidence},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := parse(t, b)
			tr := *trust
			tc.tamper(r, &tr)
			res, err := receipt.Verify(context.Background(), r, &tr)
			if !errors.Is(err, receipt.ErrInvalid) {
				t.Fatalf("accepted: %v", err)
			}
			last := res.Checks[len(res.Checks)-1]
			for _, c := range res.Checks {
				if !c.OK {
					last = c
					break
				}
			}
			if last.ID != tc.check || last.OK {
				t.Fatalf("failed at %s (%s), want %s: %v", last.ID, last.Detail, tc.check, err)
			}
		})
	}
}

// The receipt's checkpoint must extend the one the verifier pinned: its own
// checkpoint pinned is consistent; a consistency proof that does not hold
// (a fork, or a rewritten log) fails at the consistency check.
func TestVerifyRefusesAFork(t *testing.T) {
	b, trust := load(t)
	r := parse(t, b)
	// The receipt's own checkpoint as the trusted one: consistent.
	if _, err := receipt.Verify(context.Background(), r, &receipt.Trust{ValidatorSet: trust.ValidatorSet, Checkpoint: []byte(r.Ledger.Checkpoint)}); err != nil {
		t.Fatal(err)
	}
	// A consistency proof that does not hold.
	r = parse(t, b)
	if r.Ledger.Consistency == nil || len(r.Ledger.Consistency.Hashes) == 0 {
		t.Fatal("the demo receipt carries no consistency proof")
	}
	r.Ledger.Consistency.Hashes[0][0] ^= 1
	res, err := receipt.Verify(context.Background(), r, trust)
	if !errors.Is(err, receipt.ErrInvalid) || res.Checks[len(res.Checks)-1].ID != receipt.CheckConsistency {
		t.Fatalf("a bad consistency proof: %v", err)
	}
}

func TestParseBounds(t *testing.T) {
	b, _ := load(t)
	for name, in := range map[string][]byte{
		"unknown field":    bytes.Replace(b, []byte(`"format"`), []byte(`"extra": 1, "format"`), 1),
		"data after":       append(append([]byte{}, b...), []byte("{}")...),
		"another format":   bytes.Replace(b, []byte(receipt.Format), []byte("cloister-receipt/v9"), 1),
		"too large":        append(append([]byte{}, b...), bytes.Repeat([]byte(" "), receipt.MaxBytes)...),
		"no entries":       mutate(t, b, func(m map[string]any) { m["ledger"].(map[string]any)["entries"] = []any{} }),
		"no validator set": mutate(t, b, func(m map[string]any) { delete(m["ledger"].(map[string]any), "validator_set") }),
		"a 65-hash proof": mutate(t, b, func(m map[string]any) {
			e := m["ledger"].(map[string]any)["entries"].([]any)[0].(map[string]any)
			p := []any{}
			for range 65 {
				p = append(p, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
			}
			e["proof"] = p
		}),
	} {
		if _, err := receipt.Parse(in); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func mutate(t *testing.T, b []byte, f func(map[string]any)) []byte {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, _ := json.Marshal(m)
	return out
}

// FuzzVerify: whatever the bytes, Parse and Verify return without
// panicking, and Verify's answer and its error agree.
func FuzzVerify(f *testing.F) {
	b, trust := load(f)
	f.Add(b)
	f.Add([]byte(`{"format":"cloister-receipt/v1"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := receipt.Parse(in)
		if err != nil {
			return
		}
		ctx := context.Background()
		res, err := receipt.Verify(ctx, r, trust)
		if err == nil && (res == nil || !res.Valid) {
			t.Fatal("no error, yet not valid")
		}
		receipt.Verify(ctx, r, nil)
	})
}
