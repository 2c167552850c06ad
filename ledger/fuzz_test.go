package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// FuzzBatchBody feeds the HTTP batch parser arbitrary bodies: it must not
// panic, must keep each element's bytes exactly as sent, and every element
// it passes on is judged by DecodeEntry alone.
func FuzzBatchBody(f *testing.F) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	se, _ := verify.NewEntryWithNonce(k, KindNote, map[string]any{"a": 1}, 9, time.Unix(1700000000, 0))
	tx := se.Encode()
	f.Add([]byte(`{"entries":[` + string(tx) + `]}`))
	f.Add([]byte(`{"entries":[` + string(tx) + `,` + string(tx) + `]}`))
	f.Add([]byte(`{"entries":[ ` + string(tx) + ` , {"x":1}]}`))
	f.Add([]byte(`{"entries":[]}`))
	f.Add([]byte(`{"entries":null,"extra":1}`))
	f.Add([]byte(`{"entries":[1,"s",null]}`))
	f.Add([]byte(`{"entries":[{"a":"}\"{"},{"b":[{}]}]}`))
	f.Add([]byte(`{"entries":[{},{}` + "\n" + `]}`))
	f.Add([]byte(`{"Entries":[{}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		// The compact form's parser takes only what encoding/json takes,
		// as the same elements.
		slow, slowErr := parseBatchJSON(body)
		if fast, ok := parseCompactBatch(body); ok {
			if slowErr != nil {
				t.Fatalf("the compact parser took what encoding/json refuses (%v): %q", slowErr, body)
			}
			if len(fast) != len(slow) {
				t.Fatalf("the compact parser found %d elements, encoding/json %d: %q", len(fast), len(slow), body)
			}
			for i := range fast {
				if !bytes.Equal(fast[i], slow[i]) {
					t.Fatalf("element %d: %q by the compact parser, %q by encoding/json", i, fast[i], slow[i])
				}
			}
		}
		items, err := parseBatch(body)
		if (err == nil) != (slowErr == nil) {
			t.Fatalf("parseBatch says %v, encoding/json %v", err, slowErr)
		}
		if err != nil {
			return
		}
		if len(items) == 0 || len(items) > maxBatchItems {
			t.Fatalf("parseBatch returned %d items", len(items))
		}
		for _, it := range items {
			if !bytes.Contains(body, it) {
				t.Fatalf("item %q is not a substring of the body", it)
			}
			if e, err := verify.DecodeEntry(it); err == nil && !bytes.Equal(e.Encode(), it) {
				t.Fatal("accepted entry does not re-encode to its bytes")
			}
		}
	})
}

// FuzzCheckpointTx feeds the block's checkpoint transaction parser
// arbitrary bytes against a fixed validator set: it must not panic, and
// whatever it accepts must be a note that verify.OpenCheckpoint (the client's
// check) accepts too, for exactly the expected checkpoint.
func FuzzCheckpointTx(f *testing.F) {
	keys := make([]ed25519.PrivateKey, 4)
	vks := make([]validatorKey, 4)
	for i := range keys {
		keys[i] = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{byte(i + 1)}, 32))
		vks[i] = validatorKey{pub: keys[i].Public().(ed25519.PublicKey), power: int64(i + 1)}
	}
	vs, err := newValidatorSet("fuzz", vks)
	if err != nil {
		f.Fatal(err)
	}
	want := logHead{Origin: vs.origin, Size: 3, Root: sha256.Sum256([]byte("r"))}
	sigs := map[string][]byte{}
	for _, k := range keys {
		sigs[string(verify.ValidatorAddress(k.Public().(ed25519.PublicKey)))] = ed25519.Sign(k, []byte(want.Text()))
	}
	signed, err := vs.assembleCheckpoint(want, sigs)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(encodeCheckpointTx(signed))
	f.Add(signed)
	f.Add(append([]byte{0}, want.Text()...))
	f.Add([]byte{0})
	f.Fuzz(func(t *testing.T, tx []byte) {
		note, err := vs.parseCheckpointTx(tx, want)
		if err != nil {
			return
		}
		c, err := verify.OpenCheckpoint(note, vs.public)
		if err != nil || (logHead{c.Origin, c.Size, c.Root}) != want {
			t.Fatalf("block check accepted a note the client check refuses: %+v %v", c, err)
		}
	})
}

// TestCompactBatchParse: a batch as ledger/client writes it takes the
// compact parser (so FuzzBatchBody's comparison is not vacuous), with
// every element as sent; spaces or another spelling go to encoding/json.
func TestCompactBatchParse(t *testing.T) {
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	items := make([]verify.BatchItem, 3)
	for i := range items {
		items[i] = verify.BatchItem{Kind: KindNote, Body: map[string]any{"text": "a \"quoted\" }{ brace", "i": i}, Nonce: uint64(i), Time: time.Unix(1700000000, 0)}
	}
	ses, err := verify.SignBatch(k, items)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"entries":[`)
	for i, se := range ses {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, se.Encode()...)
	}
	body = append(body, `]}`...)
	got, ok := parseCompactBatch(body)
	if !ok || len(got) != len(ses) {
		t.Fatalf("compact parse of a client's batch: %d elements, %v", len(got), ok)
	}
	for i, se := range ses {
		if !bytes.Equal(got[i], se.Encode()) {
			t.Fatalf("element %d: %q", i, got[i])
		}
	}
	for _, other := range []string{`{"entries": [{}]}`, `{"entries":[{}]}` + "\n", `{"ENTRIES":[{}]}`, `{"entries":[{},1]}`, `{"entries":[{"a":}]}`} {
		if _, ok := parseCompactBatch([]byte(other)); ok {
			t.Errorf("compact parse took %q", other)
		}
	}
}
