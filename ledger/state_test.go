package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/jcs"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
)

// TestStateMachineRefusals drives a real embedded ledger through each
// refusal of the contract, through Append and through the HTTP API, and
// checks that a refused entry leaves no trace in the log.
func TestStateMachineRefusals(t *testing.T) {
	e := openTestEmbedded(t, t.TempDir())
	defer e.Close()
	c := serveAPI(t, e.Handler())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key := newTestKey(t)
	pub := key.Public().(ed25519.PublicKey)
	mustAppend := func(se *verify.SignedEntry) verify.Receipt {
		t.Helper()
		rc, err := e.Append(ctx, se)
		if err != nil {
			t.Fatalf("%s: %v", se.Entry.Kind, err)
		}
		return rc
	}

	t.Run("bad_signature", func(t *testing.T) {
		se := signEntry(t, key, KindNote, map[string]any{"text": "hello"})
		se.Entry.Body = json.RawMessage(`{"text":"jello"}`)
		_, err := e.Append(ctx, se)
		wantRejected(t, err, verify.CodeBadSignature)
		status, b := c.do("POST", "/v1/entries", se.Encode())
		wantError(t, status, b, 422, verify.CodeBadSignature)
	})
	t.Run("replay", func(t *testing.T) {
		se := signEntry(t, key, KindNote, map[string]any{"text": "once"})
		mustAppend(se)
		_, err := e.Append(ctx, se)
		wantRejected(t, err, verify.CodeReplay)
		status, b := c.do("POST", "/v1/entries", se.Encode())
		wantError(t, status, b, 422, verify.CodeReplay)
		// A different entry with the same nonce is a replay too.
		other, err := verify.NewEntryWithNonce(key, KindNote, map[string]any{"text": "twice"}, se.Entry.Nonce, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Append(ctx, other)
		wantRejected(t, err, verify.CodeReplay)
		// The refusal says which entry holds the nonce, and whether it is
		// the same entry: here not; the first one signed again at another
		// time, yes — over the HTTP API too.
		var rej *verify.RejectedError
		if errors.As(err, &rej); rej == nil || rej.HeldBy == nil || rej.SameEntry {
			t.Errorf("another entry under a used nonce: %+v", rej)
		}
		again, err := verify.NewEntryWithNonce(key, KindNote, map[string]any{"text": "once"}, se.Entry.Nonce, time.Now().Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Append(ctx, again)
		if errors.As(err, &rej); rej == nil || rej.Code != verify.CodeReplay || rej.HeldBy == nil || !rej.SameEntry {
			t.Errorf("the same entry signed again: %v %+v", err, rej)
		}
		status, b = c.do("POST", "/v1/entries", again.Encode())
		wantError(t, status, b, 422, verify.CodeReplay)
		if !strings.Contains(string(b), `"same_entry":true`) {
			t.Errorf("HTTP refusal of the same entry signed again: %s", b)
		}
	})
	t.Run("replay_together", func(t *testing.T) {
		// Two entries under one nonce that reach the mempool together both
		// pass CheckTx (it sees committed entries only); the block takes
		// one and refuses the other, which must still be told which entry
		// holds the nonce and whether it is the same one.
		for _, same := range []bool{true, false} {
			nonce := testNonce.Add(1)
			first, err := verify.NewEntryWithNonce(key, KindNote, map[string]any{"text": "together"}, nonce, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			text := "together"
			if !same {
				text = "apart"
			}
			second, err := verify.NewEntryWithNonce(key, KindNote, map[string]any{"text": text}, nonce, time.Now().Add(time.Second))
			if err != nil {
				t.Fatal(err)
			}
			p1, err := e.ln.enqueue(first.Encode(), true)
			if err != nil {
				t.Fatal(err)
			}
			defer p1.release()
			p2, err := e.ln.enqueue(second.Encode(), true)
			var rej *verify.RejectedError
			if err == nil { // the usual case: both in the mempool
				defer p2.release()
				_, err = p2.wait(ctx)
			}
			rc, err1 := p1.wait(ctx)
			if err1 != nil {
				t.Fatalf("the first copy: %v", err1)
			}
			if !errors.As(err, &rej) || rej.Code != verify.CodeReplay || rej.HeldBy == nil || *rej.HeldBy != rc.Index || rej.SameEntry != same {
				t.Fatalf("same entry %v: the second copy got %v %+v; want a replay held by entry %d, same_entry %v", same, err, rej, rc.Index, same)
			}
		}
	})
	t.Run("unauthorized", func(t *testing.T) {
		// Not a registered node.
		se := signEntry(t, key, KindSessionEvent, map[string]any{"session": "s1", "event": "session.created", "policy_hash": strings.Repeat("ab", 32)})
		_, err := e.Append(ctx, se)
		wantRejected(t, err, verify.CodeUnauthorized)
		status, b := c.do("POST", "/v1/entries", signEntry(t, key, KindVerdict, map[string]any{"x": 1}).Encode())
		wantError(t, status, b, 422, verify.CodeUnauthorized)
		// A node registers itself only.
		other := newTestKey(t)
		_, err = e.Append(ctx, signEntry(t, key, KindNodeRegistered, nodeBody(other.Public().(ed25519.PublicKey))))
		wantRejected(t, err, verify.CodeUnauthorized)
	})
	t.Run("missing_reference", func(t *testing.T) {
		node := newTestKey(t)
		mustAppend(signEntry(t, node, KindNodeRegistered, nodeBody(node.Public().(ed25519.PublicKey))))
		_, err := e.Append(ctx, signEntry(t, node, KindSessionEvent, map[string]any{"session": "nope", "event": "session.run_finished"}))
		wantRejected(t, err, verify.CodeMissingReference)
		_, err = e.Append(ctx, signEntry(t, node, KindResultCommitted, map[string]any{"session": "nope", "outputs": map[string]any{}, "signature": "x"}))
		wantRejected(t, err, verify.CodeMissingReference)
		// With the reference it works, and a second session.created is refused.
		ph := strings.Repeat("cd", 32)
		mustAppend(signEntry(t, node, KindSessionEvent, map[string]any{"session": "s9", "event": "session.created", "policy_hash": ph}))
		mustAppend(signEntry(t, node, KindSessionEvent, map[string]any{"session": "s9", "event": "session.run_finished", "policy_hash": ph}))
		mustAppend(signEntry(t, node, KindResultCommitted, map[string]any{"session": "s9", "outputs": map[string]any{"r": ph}, "signature": "c2ln"}))
		_, err = e.Append(ctx, signEntry(t, node, KindSessionEvent, map[string]any{"session": "s9", "event": "session.closed", "policy_hash": strings.Repeat("00", 32)}))
		wantRejected(t, err, verify.CodeMissingReference)
		_, err = e.Append(ctx, signEntry(t, node, KindSessionEvent, map[string]any{"session": "s9", "event": "session.created", "policy_hash": ph}))
		wantRejected(t, err, verify.CodeReplay)
		// Another node cannot use this node's session.
		node2 := newTestKey(t)
		mustAppend(signEntry(t, node2, KindNodeRegistered, nodeBody(node2.Public().(ed25519.PublicKey))))
		_, err = e.Append(ctx, signEntry(t, node2, KindSessionEvent, map[string]any{"session": "s9", "event": "session.closed"}))
		wantRejected(t, err, verify.CodeMissingReference)
	})
	t.Run("policy", func(t *testing.T) {
		doc, hash := testPolicy(t, pub)
		mustAppend(signEntry(t, key, KindPolicyPublished, map[string]any{"policy_hash": hash, "policy": doc}))
		_, err := e.Append(ctx, signEntry(t, newTestKey(t), KindPolicyPublished, map[string]any{"policy_hash": hash, "policy": doc}))
		wantRejected(t, err, verify.CodeUnauthorized)
		_, err = e.Append(ctx, signEntry(t, key, KindPolicyPublished, map[string]any{"policy_hash": strings.Repeat("0", 64), "policy": doc}))
		wantRejected(t, err, verify.CodeMalformed)
	})
	t.Run("stale_time", func(t *testing.T) {
		se, err := verify.NewEntryWithNonce(key, KindNote, map[string]any{}, testNonce.Add(1), time.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Append(ctx, se)
		wantRejected(t, err, verify.CodeStaleTime)
	})
	t.Run("malformed", func(t *testing.T) {
		se := signEntry(t, key, KindNote, map[string]any{"a": 1})
		spaced := bytes.Replace(se.Encode(), []byte(`"a":1`), []byte(`"a": 1`), 1)
		// Through the mempool (a peer could send it): CheckTx refuses it.
		_, err := e.ln.enqueue(spaced, false)
		wantRejected(t, err, verify.CodeMalformed)
		status, b := c.do("POST", "/v1/entries", spaced)
		wantError(t, status, b, 400, verify.CodeMalformed)
		// A checkpoint-prefixed transaction from outside.
		_, err = e.ln.enqueue(append([]byte{0}, se.Encode()...), false)
		wantRejected(t, err, verify.CodeMalformed)
		_, err = e.Append(ctx, signEntry(t, key, verify.Kind("bogus"), map[string]any{}))
		wantRejected(t, err, verify.CodeMalformed)
		_, err = e.Append(ctx, signEntry(t, newTestKey(t), KindNodeRegistered, map[string]any{"platform_key": "x"}))
		wantRejected(t, err, verify.CodeMalformed)
		status, b = c.do("POST", "/v1/entries", bytes.Repeat([]byte("x"), verify.MaxEntryBytes+1))
		wantError(t, status, b, 413, verify.CodeTooLarge)
		// The identity point as a key: R = identity, S = 0 verifies for any
		// message, no private key needed. The ledger refuses such keys.
		identity := append([]byte{1}, make([]byte, 31)...)
		forged := &verify.SignedEntry{
			Entry: verify.Entry{Kind: KindNote, Body: json.RawMessage(`{"forged":true}`), Submitter: protocol.FormatEd25519Key(identity),
				Nonce: testNonce.Add(1), Time: verify.FormatTime(time.Now())},
			Signature: append(bytes.Clone(identity), make([]byte, 32)...),
		}
		if err := forged.VerifySignature(); err != nil {
			t.Fatalf("the forged signature should verify under the identity key: %v", err)
		}
		_, err = e.Append(ctx, forged)
		wantRejected(t, err, verify.CodeMalformed)
	})

	// Only accepted entries are in the log, numbered without gaps.
	var st statusJSON
	c.getJSON("/v1/status", &st)
	var list struct {
		Size    uint64      `json:"size"`
		Entries []entryJSON `json:"entries"`
	}
	c.getJSON("/v1/entries?from=0&limit=1000", &list)
	if uint64(len(list.Entries)) != list.Size || list.Size != st.Size {
		t.Fatalf("listed %d entries, size %d, status size %d", len(list.Entries), list.Size, st.Size)
	}
	for i, en := range list.Entries {
		se, err := verify.DecodeEntry(en.Entry)
		if err != nil || se.VerifySignature() != nil || en.Index != uint64(i) {
			t.Fatalf("entry %d in the log is not a valid entry: %v", i, err)
		}
	}
	if want := uint64(9); st.Size != want { // two of them by replay_together
		t.Fatalf("log size %d, want %d accepted entries", st.Size, want)
	}
}

func nodeBody(pub ed25519.PublicKey) map[string]any {
	return map[string]any{"platform_key": protocol.FormatEd25519Key(pub), "class": "software",
		"evidence": base64.StdEncoding.EncodeToString([]byte("evidence"))}
}

// testPolicy is the psi-sum example policy with alice's key replaced.
func testPolicy(t *testing.T, alice ed25519.PublicKey) (json.RawMessage, string) {
	t.Helper()
	b, err := os.ReadFile("../examples/policies/psi-sum.json")
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.Replace(b, []byte("ed25519:H3oD01CzDGibCf/3tz3jTkEEt1g0scy16Xoo3RWP5bA="), []byte(protocol.FormatEd25519Key(alice)), 1)
	p, err := policy.Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	canon, err := jcs.Canonicalize(b)
	if err != nil {
		t.Fatal(err)
	}
	return canon, p.HashHex()
}
