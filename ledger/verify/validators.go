package verify

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

const (
	// OriginPrefix starts every ledger origin: "cloister.ledger/<chain_id>".
	OriginPrefix = "cloister.ledger/"
	// MaxValidators bounds a set: a signed note carries at most 100
	// signatures (x/mod/sumdb/note).
	MaxValidators = 100
	// MaxTotalPower bounds the set's total voting power (CometBFT's own
	// bound); it also keeps 3*power from overflowing in Quorum.
	MaxTotalPower = math.MaxInt64 / 8
	maxChainIDLen = 50
	// algEd25519 is the note algorithm byte of Ed25519 verifier keys.
	algEd25519 = 1
)

// Origin is the checkpoint origin line of the ledger with this chain id.
func Origin(chainID string) string { return OriginPrefix + chainID }

// CheckChainID accepts 1 to 50 letters, digits, '.', '_' and '-': safe in
// a note signer name ("<chain_id>/validator-…", no '+' or space) and in
// file names.
func CheckChainID(id string) error {
	if id == "" || len(id) > maxChainIDLen {
		return fmt.Errorf("chain id %.60q: want 1 to %d characters", id, maxChainIDLen)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("chain id %q: only letters, digits, '.', '_' and '-' are allowed", id)
		}
	}
	return nil
}

// Validator is one member of the ledger's validator set, as the ledger
// publishes it (GET /v1/validators).
type Validator struct {
	// Name is the note signer name, "<chain_id>/validator-<first 8 hex
	// digits of Address>".
	Name string `json:"name"`
	// Key is the note verifier key "<name>+<hash>+<base64(0x01‖pub)>" of
	// the validator's Ed25519 consensus key.
	Key string `json:"key"`
	// Power is the validator's voting power.
	Power int64 `json:"power"`
	// Address is the CometBFT address: hex of SHA-256(pub)[:20], in either
	// case.
	Address string `json:"address"`
}

// ValidatorAddress is CometBFT's address of an Ed25519 key: the first 20
// bytes of SHA-256 of the public key.
func ValidatorAddress(pub ed25519.PublicKey) []byte {
	h := sha256.Sum256(pub)
	return h[:20]
}

// ValidatorName is the note signer name of the validator at address.
func ValidatorName(chainID string, address []byte) string {
	return chainID + "/validator-" + hex.EncodeToString(address[:4])
}

// NewValidator describes the validator with consensus key pub and power.
func NewValidator(chainID string, pub ed25519.PublicKey, power int64) (Validator, error) {
	if len(pub) != ed25519.PublicKeySize {
		return Validator{}, errors.New("validator key is not an Ed25519 public key")
	}
	addr := ValidatorAddress(pub)
	name := ValidatorName(chainID, addr)
	key, err := note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		return Validator{}, fmt.Errorf("validator %s: %w", name, err)
	}
	return Validator{Name: name, Key: key, Power: power, Address: hex.EncodeToString(addr)}, nil
}

// PublicKey returns the validator's Ed25519 consensus key, from Key.
func (v *Validator) PublicKey() (ed25519.PublicKey, error) {
	// Names and hashes contain no '+'; base64 may.
	parts := strings.SplitN(v.Key, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("not a note verifier key (name+hash+key)")
	}
	b, err := base64.StdEncoding.Strict().DecodeString(parts[2])
	if err != nil || len(b) != 1+ed25519.PublicKeySize || b[0] != algEd25519 {
		return nil, errors.New("not an Ed25519 note verifier key")
	}
	return ed25519.PublicKey(b[1:]), nil
}

func (v *Validator) check(chainID string) error {
	// The ledger writes addresses in lower case, CometBFT's tools in upper
	// case; either names the same address (it is derived, not signed).
	addr, err := hex.DecodeString(v.Address)
	if err != nil || len(addr) != 20 {
		return fmt.Errorf("address %.60q: want 40 hex digits", v.Address)
	}
	if want := ValidatorName(chainID, addr); v.Name != want {
		return fmt.Errorf("name %.80q: want %s", v.Name, want)
	}
	if v.Power < 1 || v.Power > MaxTotalPower {
		return fmt.Errorf("%s: power %d out of range", v.Name, v.Power)
	}
	pub, err := v.PublicKey()
	if err != nil {
		return fmt.Errorf("%s: key: %w", v.Name, err)
	}
	verifier, err := note.NewVerifier(v.Key)
	if err != nil {
		return fmt.Errorf("%s: key %.100q: %v", v.Name, v.Key, err)
	}
	if verifier.Name() != v.Name {
		return fmt.Errorf("%s: key is for name %.80q", v.Name, verifier.Name())
	}
	if !bytes.Equal(ValidatorAddress(pub), addr) {
		return fmt.Errorf("%s: address %s is not derived from its key", v.Name, v.Address)
	}
	return nil
}

// ValidatorSet is the ledger's validator set.
type ValidatorSet struct {
	ChainID    string      `json:"chain_id"`
	Origin     string      `json:"origin"`
	Validators []Validator `json:"validators"`
}

// NewValidatorSet builds and checks the set of chain chainID.
func NewValidatorSet(chainID string, validators []Validator) (*ValidatorSet, error) {
	vs := &ValidatorSet{ChainID: chainID, Origin: Origin(chainID), Validators: validators}
	if err := vs.Check(); err != nil {
		return nil, err
	}
	return vs, nil
}

// TotalPower is the sum of the validators' voting power.
func (vs *ValidatorSet) TotalPower() int64 {
	var t int64
	for _, v := range vs.Validators {
		t += v.Power
	}
	return t
}

// Check checks the set's shape and internal consistency: origin derived
// from the chain id, names derived from addresses, addresses derived from
// keys, powers positive and bounded, no duplicates. Run it on every set
// received from a server or read from a file.
func (vs *ValidatorSet) Check() error {
	if err := CheckChainID(vs.ChainID); err != nil {
		return err
	}
	if want := Origin(vs.ChainID); vs.Origin != want {
		return fmt.Errorf("origin %.80q is not %q", vs.Origin, want)
	}
	if n := len(vs.Validators); n == 0 || n > MaxValidators {
		return fmt.Errorf("%d validators, want 1 to %d", n, MaxValidators)
	}
	names := map[string]bool{}
	var total int64
	for i, v := range vs.Validators {
		if err := v.check(vs.ChainID); err != nil {
			return fmt.Errorf("validator %d: %w", i, err)
		}
		if names[v.Name] {
			return fmt.Errorf("validator %d: name %s appears twice", i, v.Name)
		}
		names[v.Name] = true
		if v.Power > MaxTotalPower-total {
			return fmt.Errorf("total voting power exceeds %d", int64(MaxTotalPower))
		}
		total += v.Power
	}
	return nil
}

// Equal reports whether two sets are the same: same chain, and the same
// validators (name, key, power and address), in any order.
func (vs *ValidatorSet) Equal(o *ValidatorSet) bool {
	return vs.ChainID == o.ChainID && vs.Origin == o.Origin && slices.Equal(vs.sorted(), o.sorted())
}

// Diff describes how o differs from vs, for error messages.
func (vs *ValidatorSet) Diff(o *ValidatorSet) string {
	if vs.ChainID != o.ChainID {
		return fmt.Sprintf("chain %q instead of %q", o.ChainID, vs.ChainID)
	}
	var parts []string
	old := map[string]Validator{}
	for _, v := range vs.Validators {
		old[v.Name] = v
	}
	seen := map[string]bool{}
	for _, v := range o.sorted() {
		seen[v.Name] = true
		p, ok := old[v.Name]
		switch {
		case !ok:
			parts = append(parts, "new "+v.Name)
		case p.Key != v.Key:
			parts = append(parts, v.Name+" has another key")
		case p.Power != v.Power:
			parts = append(parts, fmt.Sprintf("%s power %d instead of %d", v.Name, v.Power, p.Power))
		}
	}
	for _, v := range vs.sorted() {
		if !seen[v.Name] {
			parts = append(parts, "missing "+v.Name)
		}
	}
	return strings.Join(parts, ", ")
}

func (vs *ValidatorSet) sorted() []Validator {
	s := slices.Clone(vs.Validators)
	for i := range s {
		s[i].Address = strings.ToLower(s[i].Address)
	}
	slices.SortFunc(s, func(a, b Validator) int { return strings.Compare(a.Name, b.Name) })
	return s
}

// verifiers returns the set's note verifiers and each name's power.
func (vs *ValidatorSet) verifiers() (note.Verifiers, map[string]int64, error) {
	list := make([]note.Verifier, 0, len(vs.Validators))
	power := make(map[string]int64, len(vs.Validators))
	for _, v := range vs.Validators {
		nv, err := note.NewVerifier(v.Key)
		if err != nil {
			return nil, nil, fmt.Errorf("validator %s: %w", v.Name, err)
		}
		list = append(list, nv)
		power[v.Name] = v.Power
	}
	return note.VerifierList(list...), power, nil
}
