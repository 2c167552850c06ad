package challenge

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"filippo.io/edwards25519"
	vrf "filippo.io/mostly-harmless/vrf-r255"

	"github.com/cloisterhq/cloister/api/protocol"
)

// TestVRFVector: the suite's published vector, through the same library
// calls VerifyShare makes.
func TestVRFVector(t *testing.T) {
	raw, err := os.ReadFile("testdata/vrf-r255-vector.json")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]string
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	hx := func(k string) []byte {
		b, err := hex.DecodeString(v[k])
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		return b
	}
	sk, err := vrf.NewPrivateKey(hx("sk"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sk.PublicKey().Bytes(), hx("pk")) {
		t.Fatalf("pk %x", sk.PublicKey().Bytes())
	}
	pi := sk.Prove(hx("alpha"))
	if !bytes.Equal(pi.Bytes(), hx("pi")) {
		t.Fatalf("pi %x", pi.Bytes())
	}
	p, err := vrf.NewProof(hx("pi"))
	if err != nil {
		t.Fatal(err)
	}
	beta, err := sk.PublicKey().Verify(p, hx("alpha"))
	if err != nil || !bytes.Equal(beta, hx("beta")) {
		t.Fatalf("verify: %x, %v", beta, err)
	}
}

func newKeys(t *testing.T, n int) []ed25519.PrivateKey {
	t.Helper()
	out := make([]ed25519.PrivateKey, n)
	for i := range out {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = k
	}
	return out
}

// TestVRFKeyIsTheConsensusKey: the public VRF key anyone derives from an
// Ed25519 public key is the one the holder of the Ed25519 key proves with.
func TestVRFKeyIsTheConsensusKey(t *testing.T) {
	for _, k := range newKeys(t, 64) {
		y, err := VRFPublicKey(k.Public().(ed25519.PublicKey))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := y.Bytes(), VRFKey(k).PublicKey().Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("derived %x, holder's %x", got, want)
		}
	}
	// The identity and a point with a small-order component are refused.
	id := edwards25519.NewIdentityPoint().Bytes()
	if _, err := VRFPublicKey(id); err == nil {
		t.Fatal("identity key accepted")
	}
	k := newKeys(t, 1)[0]
	p, _ := new(edwards25519.Point).SetBytes(k.Public().(ed25519.PublicKey))
	// (0, -1) has order 2.
	t2 := make([]byte, 32)
	t2[0] = 0xec
	for i := 1; i < 31; i++ {
		t2[i] = 0xff
	}
	t2[31] = 0x7f
	two, err := new(edwards25519.Point).SetBytes(t2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VRFPublicKey(new(edwards25519.Point).Add(p, two).Bytes()); err == nil || !strings.Contains(err.Error(), "prime-order") {
		t.Fatalf("mixed-order key: %v", err)
	}
}

func voters(keys []ed25519.PrivateKey) []Voter {
	out := make([]Voter, len(keys))
	for i, k := range keys {
		out[i] = Voter{Key: k.Public().(ed25519.PublicKey), Power: 10}
	}
	return out
}

func shares(keys []ed25519.PrivateKey, alpha []byte, epoch uint64) *BeaconShares {
	m := map[string][]byte{}
	for _, k := range keys {
		m[protocol.FormatEd25519Key(k.Public().(ed25519.PublicKey))] = Prove(k, alpha)
	}
	return SharesFrom(epoch, m)
}

func TestCombineShares(t *testing.T) {
	keys := newKeys(t, 4)
	vs := voters(keys)
	alpha := Alpha("test-chain", 7, [32]byte{1})
	all, err := CombineShares(shares(keys, alpha, 7), alpha, vs)
	if err != nil {
		t.Fatal(err)
	}
	// Unique: the same shares again (VRF proofs are deterministic, and
	// the output unique for key and input) give the same beacon.
	again, _ := CombineShares(shares(keys, alpha, 7), alpha, vs)
	if again != all {
		t.Fatal("two beacons from the same shares")
	}
	// A validator withholding: three of four still hold more than 2/3,
	// and give another beacon — the one choice withholding has.
	three, err := CombineShares(shares(keys[:3], alpha, 7), alpha, vs)
	if err != nil || three == all {
		t.Fatalf("withheld share: %v (same beacon %v)", err, three == all)
	}
	// Two of four: no quorum.
	if _, err := CombineShares(shares(keys[:2], alpha, 7), alpha, vs); err == nil || !strings.Contains(err.Error(), "need more than 2/3") {
		t.Fatalf("half the power: %v", err)
	}
	// A share for another epoch's input, a forged proof, a non-validator.
	other := shares(keys, Alpha("test-chain", 8, [32]byte{1}), 7)
	if _, err := CombineShares(other, alpha, vs); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("share of another input: %v", err)
	}
	forged := shares(keys, alpha, 7)
	p := []byte(forged.Shares[1].Proof)
	p[100] ^= 1 // inside the scalar s
	if p[100] > 'f' || p[100] < '0' || (p[100] > '9' && p[100] < 'a') {
		p[100] = '0'
	}
	forged.Shares[1].Proof = string(p)
	if _, err := CombineShares(forged, alpha, vs); err == nil {
		t.Fatal("forged share accepted")
	}
	stranger := shares(append(keys[:3:3], newKeys(t, 1)...), alpha, 7)
	if _, err := CombineShares(stranger, alpha, vs); err == nil || !strings.Contains(err.Error(), "not a validator") {
		t.Fatalf("stranger's share: %v", err)
	}
	// A validator's share cannot stand for another's.
	swapped := shares(keys, alpha, 7)
	swapped.Shares[0].Proof, swapped.Shares[1].Proof = swapped.Shares[1].Proof, swapped.Shares[0].Proof
	if _, err := CombineShares(swapped, alpha, vs); err == nil {
		t.Fatal("swapped shares accepted")
	}
}

func TestDecodeBeacon(t *testing.T) {
	keys := newKeys(t, 2)
	alpha := Alpha("c", 1, [32]byte{})
	good := shares(keys, alpha, 1)
	raw, _ := json.Marshal(good)
	if _, err := DecodeBeacon(raw); err != nil {
		t.Fatal(err)
	}
	dup := *good
	dup.Shares = []Share{good.Shares[0], good.Shares[0]}
	raw, _ = json.Marshal(dup)
	if _, err := DecodeBeacon(raw); err == nil || !strings.Contains(err.Error(), "sorted") {
		t.Fatalf("duplicate share: %v", err)
	}
	for _, bad := range []string{`{"epoch":0,"shares":[]}`, `{"epoch":1,"shares":[]}`, `{"epoch":1,"shares":[{"validator":"x","proof":""}]}`, `{"epoch":1,"shares":[],"extra":1}`} {
		if _, err := DecodeBeacon([]byte(bad)); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func FuzzDecodeBeacon(f *testing.F) {
	f.Add([]byte(`{"epoch":1,"shares":[{"validator":"ed25519:AAAA","proof":"00"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if s, err := DecodeBeacon(b); err == nil && len(s.Shares) == 0 {
			t.Fatal("no shares accepted")
		}
	})
}

// BenchmarkShare: a validator's cost per vote while an epoch waits — one
// proof of its own, and one verification per other validator's vote.
func BenchmarkShare(b *testing.B) {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	pub := k.Public().(ed25519.PublicKey)
	alpha := Alpha("bench", 1, [32]byte{})
	proof := Prove(k, alpha)
	b.Run("prove", func(b *testing.B) {
		for b.Loop() {
			Prove(k, alpha)
		}
	})
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			if _, err := VerifyShare(pub, alpha, proof); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestWithholdingBound: what withholding leaves a coalition, counted. With
// four validators of equal power every subset of their shares holding
// more than 2/3 gives a beacon — the full set and the four sets of three,
// Σ_{j≤1} C(4, j) = 5 distinct values — and every smaller subset gives
// none: the bound docs/piee.md states.
func TestWithholdingBound(t *testing.T) {
	keys := newKeys(t, 4)
	vs := voters(keys)
	alpha := Alpha("bound", 3, [32]byte{9})
	seen := map[[32]byte]bool{}
	for mask := range 1 << len(keys) {
		var sub []ed25519.PrivateKey
		for i, k := range keys {
			if mask&(1<<i) != 0 {
				sub = append(sub, k)
			}
		}
		if len(sub) == 0 {
			continue
		}
		b, err := CombineShares(shares(sub, alpha, 3), alpha, vs)
		if (err == nil) != (len(sub) >= 3) {
			t.Fatalf("%d of 4 shares: %v", len(sub), err)
		}
		if err == nil {
			seen[b] = true
		}
	}
	if len(seen) != 5 {
		t.Fatalf("%d distinct beacons from every quorum of shares, want 5", len(seen))
	}
}
