package ledger

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest/software"
)

// TestEvidenceJudgedByConsensus: once a validator publishes the
// consortium's reference values for a class, node.registered evidence of
// that class is verified by the state machine at block time and refused
// with the reason when it fails — garbage, another measurement, evidence
// too old for the values' maximum age —; the same evidence is accepted at
// a block time inside its validity window and refused outside it, and so
// is an offer resting on it. Before any values, registrations pass as in
// version 4.
func TestEvidenceJudgedByConsensus(t *testing.T) {
	t.Parallel()
	c := newACLChain(t, RulesV13)
	val := seedKey(0x51)
	good := sha256.Sum256([]byte("runtime"))
	other := sha256.Sum256([]byte("another runtime"))
	evidence := func(k ed25519.PrivateKey, m [32]byte) string {
		att, err := software.NewAttester(k, software.WithMeasurement(m), software.WithClock(func() time.Time { return c.at(c.height) }))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := att.Attest(context.Background(), protocol.RegistrationReportData(k.Public().(ed25519.PublicKey)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(ev)
		return base64.StdEncoding.EncodeToString(b)
	}
	reg := func(k ed25519.PrivateKey, ev string) []byte {
		b := nodeBody(k.Public().(ed25519.PublicKey))
		b["evidence"] = ev
		return c.entry(k, KindNodeRegistered, b)
	}
	early, garbage, wrong, n := seedKey(0xd1), seedKey(0xd2), seedKey(0xd3), seedKey(0xd4)
	c.want([][]byte{reg(early, evidence(early, good)), reg(garbage, "ZXZpZGVuY2U=")}, "ok", "ok")

	values := map[string]any{"class": "software", "measurements": []string{hex.EncodeToString(good[:])}, "max_age_seconds": 60}
	c.want([][]byte{
		c.entry(n, KindReferenceValues, values),
		c.entry(val, KindReferenceValues, map[string]any{"class": "software", "unknown": 1}),
		c.entry(val, KindReferenceValues, values),
	}, "unauthorized: validator", "malformed: unknown field", "ok")

	nEv := evidence(n, good)
	c.want([][]byte{
		reg(garbage, "ZXZpZGVuY2U="),
		reg(wrong, evidence(wrong, other)),
		reg(n, nEv),
		c.entry(early, KindOffer, offerBody(60)),
	}, "unauthorized: fails the consortium's reference values (entry 2)", "unauthorized: measurement", "ok", "ok")

	// 120 s of block time later: the same evidence is older than the
	// values allow, and so is the registration an offer rests on.
	c.t0 = c.t0.Add(120 * time.Second)
	c.want([][]byte{
		reg(n, nEv),
		c.entry(n, KindOffer, offerBody(60)),
		reg(wrong, evidence(wrong, good)),
	}, "unauthorized: issued 2m", "unauthorized: issued 2m", "ok")
}
