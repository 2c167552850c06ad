package challenge

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
	vrf "filippo.io/mostly-harmless/vrf-r255"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// The VRF beacon (rule version 10 on; decision 0137, docs/piee.md
// "Randomness"). Each validator proves, in the vote extension that also
// carries its checkpoint signature, the ECVRF-RISTRETTO255-SHA512 output
// (RFC 9381's ECVRF over ristretto255) of the epoch's input Alpha, which
// is fixed by the epoch entry before anyone can know an output. The
// block's proposer puts a quorum's shares on the ledger in a piee.beacon
// entry; the beacon is the hash of the shares' outputs in validator-key
// order. A VRF output is unique for a key and an input, so the beacon is
// unique for the set of validators whose shares count: a validator can
// no longer grind it, only withhold its share.
//
// A validator's VRF key is its consensus key: the secret scalar is the
// Ed25519 one (RFC 8032 5.1.5) and the public key the ristretto255
// encoding of the Ed25519 public point, so anyone derives it from the
// validator set, and no key is registered. The VRF's nonce is derived
// from the scalar and the hashed input under the suite's own domain,
// never from Ed25519's nonce prefix, so its proofs and the key's Ed25519
// signatures never share a nonce.

// KindBeacon is the body kind carrying an epoch's VRF shares.
const KindBeacon = "piee.beacon"

// ShareSize is the length of one VRF proof (ristretto255 Gamma, a 16-byte
// challenge, a scalar).
const ShareSize = 80

// Domains of the VRF input and of the combined beacon.
const (
	VRFInputDomain  = "cloister/piee/vrf-input/v1\n"
	VRFBeaconDomain = "cloister/piee/vrf-beacon/v1\n"
)

// BeaconVRF is the kind of beacon an epoch of rule version 10 on uses
// (EpochRecord.Beacon); epochs without it use the checkpoint note.
const BeaconVRF = "vrf"

// EpochSpacing is the least block time, in seconds, between the
// openings of two epochs from rule version 10 on (decision 0138): the
// ledger, not whoever opens epochs, bounds how often every node spends
// CPU on being challenged and on verifying — at most six epochs an hour.
const EpochSpacing = 600

// Alpha is the VRF input of an epoch: the chain, the epoch's number and
// the leaf hash of the entry that opened it. It is fixed when the epoch
// entry is, before any validator can have computed a share of it.
func Alpha(chainID string, epoch uint64, epochLeaf [32]byte) []byte {
	b := make([]byte, 0, len(VRFInputDomain)+len(chainID)+1+8+32)
	b = append(b, VRFInputDomain...)
	b = append(b, chainID...)
	b = append(b, '\n')
	b = binary.BigEndian.AppendUint64(b, epoch)
	return append(b, epochLeaf[:]...)
}

// VRFKey is the VRF secret key of the Ed25519 key priv: the same scalar.
func VRFKey(priv ed25519.PrivateKey) *vrf.PrivateKey {
	h := sha512.Sum512(priv.Seed())
	s, err := edwards25519.NewScalar().SetBytesWithClamping(h[:32])
	if err != nil {
		panic(err) // 32 bytes always clamp
	}
	k, err := vrf.NewPrivateKey(s.Bytes())
	if err != nil {
		panic(err) // a reduced scalar is canonical
	}
	return k
}

var (
	sqrtM1, invSqrtAMinusD field.Element
	lMinusOne              *edwards25519.Scalar
)

func init() {
	one := new(field.Element).One()
	minusOne := new(field.Element).Negate(one)
	sqrtM1.SqrtRatio(minusOne, one)
	// d = -121665/121666, a = -1.
	var n1, n2 [32]byte
	n1[0], n1[1], n1[2] = 0x41, 0xdb, 0x01 // 121665
	n2[0], n2[1], n2[2] = 0x42, 0xdb, 0x01 // 121666
	num, _ := new(field.Element).SetBytes(n1[:])
	den, _ := new(field.Element).SetBytes(n2[:])
	d := new(field.Element).Multiply(num, new(field.Element).Invert(den))
	d.Negate(d)
	invSqrtAMinusD.SqrtRatio(one, new(field.Element).Subtract(minusOne, d))
	// l − 1, little-endian: l = 2^252 + 27742317777372353535851937790883648493.
	lm1, _ := hex.DecodeString("ecd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
	lMinusOne, _ = edwards25519.NewScalar().SetCanonicalBytes(lm1)
}

// VRFPublicKey is the VRF public key of the Ed25519 public key pub: the
// ristretto255 encoding (RFC 9496 4.3.2) of its point. It refuses a key
// that is not a point of the prime-order subgroup other than the
// identity (every key RFC 8032 makes is one).
func VRFPublicKey(pub ed25519.PublicKey) (*vrf.PublicKey, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("vrf key: not an Ed25519 public key")
	}
	p, err := new(edwards25519.Point).SetBytes(pub)
	if err != nil {
		return nil, fmt.Errorf("vrf key: %w", err)
	}
	id := edwards25519.NewIdentityPoint()
	lp := new(edwards25519.Point).ScalarMult(lMinusOne, p)
	if p.Equal(id) == 1 || lp.Add(lp, p).Equal(id) != 1 {
		return nil, errors.New("vrf key: the Ed25519 key is not a point of the prime-order subgroup")
	}
	return vrf.NewPublicKey(ristrettoEncode(p))
}

// ristrettoEncode is RFC 9496's ENCODE of the class of p.
func ristrettoEncode(p *edwards25519.Point) []byte {
	X, Y, Z, T := p.ExtendedCoordinates()
	var u1, u2, t, invSqrt, den1, den2, zInv, ix, iy, ench, x, y, denInv, s field.Element
	u1.Multiply(t.Add(Z, Y), new(field.Element).Subtract(Z, Y))
	u2.Multiply(X, Y)
	invSqrt.SqrtRatio(new(field.Element).One(), t.Multiply(t.Square(&u2), &u1))
	den1.Multiply(&invSqrt, &u1)
	den2.Multiply(&invSqrt, &u2)
	zInv.Multiply(&den1, &den2)
	zInv.Multiply(&zInv, T)
	ix.Multiply(X, &sqrtM1)
	iy.Multiply(Y, &sqrtM1)
	ench.Multiply(&den1, &invSqrtAMinusD)
	rotate := t.Multiply(T, &zInv).IsNegative()
	x.Select(&iy, X, rotate)
	y.Select(&ix, Y, rotate)
	denInv.Select(&ench, &den2, rotate)
	y.Select(new(field.Element).Negate(&y), &y, t.Multiply(&x, &zInv).IsNegative())
	s.Multiply(t.Subtract(Z, &y), &denInv)
	s.Absolute(&s)
	return s.Bytes()
}

// Prove is priv's share of alpha: its VRF proof.
func Prove(priv ed25519.PrivateKey, alpha []byte) []byte {
	return VRFKey(priv).Prove(alpha).Bytes()
}

// VerifyShare checks that proof is the share of alpha by the validator
// whose consensus key is pub, and returns its VRF output.
func VerifyShare(pub ed25519.PublicKey, alpha, proof []byte) ([]byte, error) {
	if len(proof) != ShareSize {
		return nil, fmt.Errorf("vrf share: %d bytes, want %d", len(proof), ShareSize)
	}
	y, err := VRFPublicKey(pub)
	if err != nil {
		return nil, err
	}
	p, err := vrf.NewProof(proof)
	if err != nil {
		return nil, errors.New("vrf share: not a proof")
	}
	beta, err := y.Verify(p, alpha)
	if err != nil {
		return nil, errors.New("vrf share: the proof does not verify for this validator and epoch")
	}
	return beta, nil
}

// Share is one validator's VRF proof in a piee.beacon body.
type Share struct {
	Validator string `json:"validator"` // consensus key, protocol.FormatEd25519Key
	Proof     string `json:"proof"`     // hex
}

// BeaconShares is the body of piee.beacon: an epoch's shares, sorted by
// validator key, each validator once.
type BeaconShares struct {
	Epoch  uint64  `json:"epoch"`
	Shares []Share `json:"shares"`
}

// DecodeBeacon reads and checks the shape of a piee.beacon body.
func DecodeBeacon(body []byte) (*BeaconShares, error) {
	var b BeaconShares
	if err := Decode(KindBeacon, body, &b); err != nil {
		return nil, err
	}
	if b.Epoch == 0 {
		return nil, errors.New("beacon epoch: want a number from 1")
	}
	if len(b.Shares) == 0 || len(b.Shares) > verify.MaxValidators {
		return nil, fmt.Errorf("beacon shares: want 1 to %d", verify.MaxValidators)
	}
	for i, s := range b.Shares {
		if _, err := protocol.ParseEd25519Key(s.Validator); err != nil {
			return nil, fmt.Errorf("beacon share %d validator: %w", i, err)
		}
		if !isHex(s.Proof, 2*ShareSize) {
			return nil, fmt.Errorf("beacon share %d proof: want %d lower-case hex digits", i, 2*ShareSize)
		}
		if i > 0 && s.Validator <= b.Shares[i-1].Validator {
			return nil, errors.New("beacon shares: want them sorted by validator key, each once")
		}
	}
	return &b, nil
}

// Voter is a validator whose share may count: its consensus key and power.
type Voter struct {
	Key   ed25519.PublicKey
	Power int64
}

// CombineShares checks every share of b against the validators (each
// share by one of them, proving alpha) and that their power is more than
// two thirds of total, and returns the beacon: SHA-256 of the domain,
// alpha, and each share's validator key and VRF output in key order.
func CombineShares(b *BeaconShares, alpha []byte, voters []Voter) ([32]byte, error) {
	var total, power int64
	for _, v := range voters {
		total += v.Power
	}
	h := sha256.New()
	h.Write([]byte(VRFBeaconDomain))
	h.Write(alpha)
	for i, s := range b.Shares {
		pub, _ := protocol.ParseEd25519Key(s.Validator)
		j := slices.IndexFunc(voters, func(v Voter) bool { return bytes.Equal(v.Key, pub) })
		if j < 0 {
			return [32]byte{}, fmt.Errorf("beacon share %d: %s is not a validator", i, s.Validator)
		}
		proof, _ := hex.DecodeString(s.Proof)
		beta, err := VerifyShare(pub, alpha, proof)
		if err != nil {
			return [32]byte{}, fmt.Errorf("beacon share %d (%s): %w", i, s.Validator, err)
		}
		power += voters[j].Power
		h.Write(pub)
		h.Write(beta)
	}
	if 3*power <= 2*total {
		return [32]byte{}, fmt.Errorf("beacon shares hold %d of %d voting power, need more than 2/3", power, total)
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out, nil
}

// SharesFrom builds a beacon body from validators' proofs (any order).
func SharesFrom(epoch uint64, proofs map[string][]byte) *BeaconShares {
	b := &BeaconShares{Epoch: epoch}
	for k, p := range proofs {
		b.Shares = append(b.Shares, Share{Validator: k, Proof: hex.EncodeToString(p)})
	}
	slices.SortFunc(b.Shares, func(x, y Share) int {
		if x.Validator < y.Validator {
			return -1
		}
		if x.Validator > y.Validator {
			return 1
		}
		return 0
	})
	return b
}
