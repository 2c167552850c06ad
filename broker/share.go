package broker

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"

	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/sealed"
)

// A content key is shared among n brokers with Shamir's scheme over the
// scalars of ristretto255, threshold k (any k shares recover it, fewer
// learn nothing), with Feldman's commitment so that each share can be
// checked on its own: the commitment goes on the ledger in the
// artifact's registration, and a node checks every share a broker sends
// before it combines them. The secret is the 16-byte content key as a
// little-endian scalar.

var shareGroup = group.Ristretto255

// ShareSize is the size of one share's value.
const ShareSize = 32

// Share is share number Index (1 to n) of a content key.
type Share struct {
	Index int
	Value [ShareSize]byte
}

// Split shares key among n brokers with threshold k and returns the
// shares (share i for broker i) and the commitment (k elements, hex).
func Split(key *sealed.Key, n, k int) ([]Share, []string, error) {
	if n < 1 || n > acl.MaxBrokers || k < 1 || k > n {
		return nil, nil, fmt.Errorf("key shares: %d of %d: want 1 ≤ threshold ≤ shares ≤ %d", k, n, acl.MaxBrokers)
	}
	var b [32]byte
	copy(b[:], key[:])
	secret := shareGroup.NewScalar()
	if err := secret.UnmarshalBinary(b[:]); err != nil {
		return nil, nil, err
	}
	ss := secretsharing.New(rand.Reader, uint(k-1), secret)
	var out []Share
	for _, s := range ss.Share(uint(n)) {
		v, err := s.Value.MarshalBinary()
		if err != nil || len(v) != ShareSize {
			return nil, nil, errors.New("key shares: unexpected scalar encoding")
		}
		id, _ := s.ID.MarshalBinary()
		sh := Share{Index: int(id[0])}
		copy(sh.Value[:], v)
		out = append(out, sh)
	}
	var com []string
	for _, e := range ss.CommitSecret() {
		c, err := e.MarshalBinaryCompress()
		if err != nil {
			return nil, nil, err
		}
		com = append(com, hex.EncodeToString(c))
	}
	return out, com, nil
}

// scalar sets sc to the share's value. Callers zero sc (zeroScalars)
// once done: it holds the share.
func (s *Share) scalar(sc group.Scalar) error {
	if s.Index < 1 || s.Index > acl.MaxBrokers {
		return fmt.Errorf("share index %d: want 1 to %d", s.Index, acl.MaxBrokers)
	}
	if err := sc.UnmarshalBinary(s.Value[:]); err != nil {
		return fmt.Errorf("share %d: not a scalar: %v", s.Index, err)
	}
	return nil
}

// zeroScalars overwrites scalars that held secret material: a share, the
// key, a term of their sum. The node runs no program of its own, but its
// memory outlives every run (docs/broker.md, "What is left after a run").
func zeroScalars(scs ...group.Scalar) {
	for _, sc := range scs {
		sc.SetUint64(0)
	}
}

func parseCommitment(com []string) (secretsharing.SecretCommitment, error) {
	var out secretsharing.SecretCommitment
	for i, c := range com {
		b, err := hex.DecodeString(c)
		if err != nil {
			return nil, fmt.Errorf("commitment %d: %v", i, err)
		}
		e := shareGroup.NewElement()
		if err := e.UnmarshalBinary(b); err != nil {
			return nil, fmt.Errorf("commitment %d: not a group element: %v", i, err)
		}
		out = append(out, e)
	}
	return out, nil
}

// ErrWrongShare is what VerifyShare returns for a share that is not of
// the committed secret.
var ErrWrongShare = errors.New("share does not match the artifact's commitment")

// VerifyShare checks s against the commitment the artifact's
// registration carries (threshold len(com)).
func VerifyShare(s *Share, com []string) error {
	c, err := parseCommitment(com)
	if err != nil {
		return err
	}
	if len(c) == 0 {
		return errors.New("key shares: an empty commitment")
	}
	id, v := shareGroup.NewScalar(), shareGroup.NewScalar()
	defer zeroScalars(v)
	if err := s.scalar(v); err != nil {
		return err
	}
	id.SetUint64(uint64(s.Index))
	if !secretsharing.Verify(uint(len(c)-1), secretsharing.Share{ID: id, Value: v}, c) {
		return fmt.Errorf("%w (share %d)", ErrWrongShare, s.Index)
	}
	return nil
}

// Combine recovers the content key from k or more shares of distinct
// indexes, each checked against the commitment first. The interpolation
// at zero is written here rather than taken from secretsharing.Recover,
// which keeps copies of the shares in scalars it does not hand back: the
// Lagrange coefficients depend only on the public share numbers, and
// every scalar that holds a share, a term or the sum is zeroed before
// Combine returns.
func Combine(shares []Share, com []string) (*sealed.Key, error) {
	k := len(com)
	if k < 1 || len(shares) < k {
		return nil, fmt.Errorf("key shares: %d of the %d needed", len(shares), k)
	}
	seen := map[int]bool{}
	for i := range shares {
		s := &shares[i]
		if seen[s.Index] {
			return nil, fmt.Errorf("key shares: share %d twice", s.Index)
		}
		seen[s.Index] = true
		if err := VerifyShare(s, com); err != nil {
			return nil, err
		}
	}
	// key = Σ_i y_i · λ_i, λ_i = Π_{j≠i} x_j / (x_j − x_i), over the
	// first k shares.
	sum, term, y := shareGroup.NewScalar(), shareGroup.NewScalar(), shareGroup.NewScalar()
	defer zeroScalars(sum, term, y)
	lambda, den, xi, xj, t := shareGroup.NewScalar(), shareGroup.NewScalar(), shareGroup.NewScalar(), shareGroup.NewScalar(), shareGroup.NewScalar()
	for i := range k {
		xi.SetUint64(uint64(shares[i].Index))
		lambda.SetUint64(1)
		den.SetUint64(1)
		for j := range k {
			if j == i {
				continue
			}
			xj.SetUint64(uint64(shares[j].Index))
			lambda.Mul(lambda, xj)
			den.Mul(den, t.Sub(xj, xi))
		}
		lambda.Mul(lambda, den.Inv(den))
		if err := shares[i].scalar(y); err != nil {
			return nil, err
		}
		sum.Add(sum, term.Mul(y, lambda))
	}
	b, err := sum.MarshalBinary()
	if err != nil {
		return nil, err
	}
	defer clear(b)
	for _, x := range b[sealed.KeySize:] {
		if x != 0 {
			return nil, errors.New("key shares: the recovered secret is not a content key")
		}
	}
	key := new(sealed.Key)
	copy(key[:], b)
	return key, nil
}
