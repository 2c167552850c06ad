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

func (s Share) circl() (secretsharing.Share, error) {
	if s.Index < 1 || s.Index > acl.MaxBrokers {
		return secretsharing.Share{}, fmt.Errorf("share index %d: want 1 to %d", s.Index, acl.MaxBrokers)
	}
	id := shareGroup.NewScalar()
	id.SetUint64(uint64(s.Index))
	v := shareGroup.NewScalar()
	if err := v.UnmarshalBinary(s.Value[:]); err != nil {
		return secretsharing.Share{}, fmt.Errorf("share %d: not a scalar: %v", s.Index, err)
	}
	return secretsharing.Share{ID: id, Value: v}, nil
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
func VerifyShare(s Share, com []string) error {
	c, err := parseCommitment(com)
	if err != nil {
		return err
	}
	cs, err := s.circl()
	if err != nil {
		return err
	}
	if !secretsharing.Verify(uint(len(c)-1), cs, c) {
		return fmt.Errorf("%w (share %d)", ErrWrongShare, s.Index)
	}
	return nil
}

// Combine recovers the content key from k or more shares of distinct
// indexes, each checked against the commitment first.
func Combine(shares []Share, com []string) (*sealed.Key, error) {
	k := len(com)
	if k < 1 || len(shares) < k {
		return nil, fmt.Errorf("key shares: %d of the %d needed", len(shares), k)
	}
	var cs []secretsharing.Share
	seen := map[int]bool{}
	for _, s := range shares {
		if seen[s.Index] {
			return nil, fmt.Errorf("key shares: share %d twice", s.Index)
		}
		seen[s.Index] = true
		if err := VerifyShare(s, com); err != nil {
			return nil, err
		}
		c, _ := s.circl()
		cs = append(cs, c)
	}
	secret, err := secretsharing.Recover(uint(k-1), cs)
	if err != nil {
		return nil, fmt.Errorf("key shares: %v", err)
	}
	b, err := secret.MarshalBinary()
	if err != nil {
		return nil, err
	}
	defer clear(b)
	for _, x := range b[sealed.KeySize:] {
		if x != 0 {
			return nil, errors.New("key shares: the recovered secret is not a content key")
		}
	}
	var key sealed.Key
	copy(key[:], b)
	return &key, nil
}
