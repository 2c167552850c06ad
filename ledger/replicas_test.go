package ledger

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/api/protocol"
)

// replicaWorld: organisations A, B and C (consortium members); nodes a1
// and a2 of A, b of B, c of C, and z registered for no organisation.
type replicaWorld struct {
	c                *aclChain
	orgA             ed25519.PrivateKey
	a1, a2, b, cn, z ed25519.PrivateKey
	set, ph, sa1, sb string
	sessionKeys      map[string]*ecdsa.PrivateKey
	spkis            map[string][]byte
}

func newReplicaWorld(t *testing.T) *replicaWorld {
	w := &replicaWorld{c: newACLChain(t, RulesV11), orgA: seedKey(0xa0), a1: seedKey(0xa1), a2: seedKey(0xa2), b: seedKey(0xb1), cn: seedKey(0xc1), z: seedKey(0xd1),
		set: strings.Repeat("5e", 16), ph: strings.Repeat("70", 32), sessionKeys: map[string]*ecdsa.PrivateKey{}, spkis: map[string][]byte{}}
	c := w.c
	orgB, orgC := seedKey(0xb0), seedKey(0xc0)
	var adm [][]byte
	for _, o := range []ed25519.PrivateKey{w.orgA, orgB, orgC} {
		adm = append(adm, c.entry(seedKey(0x51), KindMemberAdmitted, map[string]any{"member": pubText(o)}))
	}
	c.want(adm, "ok", "ok", "ok")
	reg := func(k, org ed25519.PrivateKey) []byte {
		b := nodeBody(k.Public().(ed25519.PublicKey))
		if org != nil {
			b["organisation"] = pubText(org)
		}
		return c.entry(k, KindNodeRegistered, b)
	}
	c.want([][]byte{reg(w.a1, w.orgA), reg(w.a2, w.orgA), reg(w.b, orgB), reg(w.cn, orgC), reg(w.z, nil)}, "ok", "ok", "ok", "ok", "ok")
	return w
}

func (w *replicaWorld) created(k ed25519.PrivateKey, session string, members ...ed25519.PrivateKey) []byte {
	var names []string
	for _, m := range members {
		names = append(names, pubText(m))
	}
	return w.c.entry(k, KindSessionEvent, map[string]any{"event": "session.created", "session": session, "policy_hash": w.ph,
		"replica_set": w.set, "replica_members": names})
}

func (w *replicaWorld) result(t *testing.T, k ed25519.PrivateKey, session, digest string, forge bool) []byte {
	sk, ok := w.sessionKeys[session]
	if !ok {
		var err error
		if sk, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			t.Fatal(err)
		}
		w.sessionKeys[session] = sk
		w.spkis[session], _ = x509.MarshalPKIXPublicKey(&sk.PublicKey)
	}
	msg, _ := protocol.ReplicaResultMessage(w.set, session, w.ph, digest)
	if forge {
		msg, _ = protocol.ReplicaResultMessage(w.set, session, w.ph, strings.Repeat("00", 32))
	}
	h := sha256.Sum256(msg)
	sig, _ := ecdsa.SignASN1(rand.Reader, sk, h[:])
	return w.c.entry(k, KindReplicaResult, map[string]any{"set": w.set, "session": session, "policy_hash": w.ph, "digest": digest,
		"session_key": w.spkis[session], "signature": sig})
}

func TestReplicaSets(t *testing.T) {
	w := newReplicaWorld(t)
	c := w.c
	s1, s2, s3 := strings.Repeat("01", 16), strings.Repeat("02", 16), strings.Repeat("03", 16)
	// One organisation is one replica; a node of no organisation counts none.
	c.want([][]byte{
		w.created(w.a1, s1, w.a1, w.a2, w.b),
		w.created(w.a1, s1, w.a1, w.z),
		w.created(w.a1, s1, w.a1),
	}, "unauthorized: one organisation is one replica", "unauthorized: registered for no organisation", "malformed: at least 2")
	// The first entry fixes the set; each member joins once.
	c.want([][]byte{w.created(w.a1, s1, w.a1, w.b, w.cn)}, "ok")
	c.want([][]byte{
		w.created(w.b, s2, w.b, w.a1, w.cn),
		w.created(w.a2, s2, w.a1, w.b, w.cn),
		w.created(w.b, s2, w.a1, w.b, w.cn),
		w.created(w.a1, s3, w.a1, w.b, w.cn),
	}, "unauthorized: has members", "unauthorized: not one of its members", "ok", "replay: joined with session")
	d1, d2 := strings.Repeat("d1", 32), strings.Repeat("d2", 32)
	c.want([][]byte{
		w.result(t, w.cn, s3, d1, false), // c has not joined
		w.result(t, w.a1, s1, d1, true),  // signature over another digest
		w.c.entry(w.orgA, KindReplicaDiscrepancy, map[string]any{"set": w.set, "results": map[string]string{}}),
		w.result(t, w.a1, s1, d1, false),
		w.result(t, w.a1, s1, d1, false),
	}, "missing_reference: joined replica set", "bad_signature", "missing_reference: do not disagree", "ok", "replay: committed its result")
	c.want([][]byte{w.result(t, w.b, s2, d2, false)}, "ok")
	c.want([][]byte{
		w.c.entry(w.z, KindReplicaDiscrepancy, map[string]any{"set": w.set, "results": map[string]string{pubText(w.a1): d1, pubText(w.b): d2}}),
		w.c.entry(w.orgA, KindReplicaDiscrepancy, map[string]any{"set": w.set, "results": map[string]string{pubText(w.a1): d1}}),
		w.c.entry(w.orgA, KindReplicaDiscrepancy, map[string]any{"set": w.set, "results": map[string]string{pubText(w.a1): d1, pubText(w.b): d2}}),
		w.c.entry(w.b, KindReplicaDiscrepancy, map[string]any{"set": w.set, "results": map[string]string{pubText(w.a1): d1, pubText(w.b): d2}}),
	}, "unauthorized: neither a member", "malformed: must be the set's recorded results", "ok", "replay: discrepancy is entry")
	var rs *ReplicaSet
	c.a.store.view(func(r reader) error {
		rs, _ = getRecord[ReplicaSet](blockView{r: r}, bucketReplicaSets, []byte(w.set))
		return nil
	})
	if rs == nil || rs.Discrepancy == 0 || rs.Agreed() || !rs.Disagreeing() || rs.Members[2].Session != "" || rs.Members[0].Digest != d1 {
		t.Fatalf("set state %+v", rs)
	}
}

// Before rule version 11 replica results are not a kind.
func TestReplicaResultBeforeV11(t *testing.T) {
	w := &replicaWorld{c: newACLChain(t, RulesV10), set: strings.Repeat("5e", 16), ph: strings.Repeat("70", 32),
		sessionKeys: map[string]*ecdsa.PrivateKey{}, spkis: map[string][]byte{}}
	w.c.want([][]byte{w.result(t, seedKey(0xa1), strings.Repeat("01", 16), strings.Repeat("d1", 32), false)}, "malformed: not one of the ledger's kinds (rule version 10)")
}
