package client

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
	// maxValidators bounds the set; a signed note carries at most 100
	// signatures (x/mod/sumdb/note).
	maxValidators = 100
	// maxTotalPower is CometBFT's bound on the total voting power; it also
	// keeps 3*power from overflowing int64.
	maxTotalPower = math.MaxInt64 / 8
	maxChainIDLen = 50 // CometBFT's limit
)

// Validator is one member of the ledger's validator set.
type Validator struct {
	// Name is the note key name, "<chain_id>/validator-<8 hex of Address>".
	Name string `json:"name"`
	// Key is the note verifier key, "<name>+<hash>+<base64(0x01||pub)>",
	// built from the validator's CometBFT consensus Ed25519 key.
	Key string `json:"key"`
	// Power is the validator's voting power.
	Power int64 `json:"power"`
	// Address is the CometBFT address: hex of SHA-256(pub)[:20].
	Address string `json:"address"`
}

// ValidatorSet is the ledger's validator set, fixed at genesis.
type ValidatorSet struct {
	ChainID    string      `json:"chain_id"`
	Origin     string      `json:"origin"`
	Validators []Validator `json:"validators"`
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
// keys, powers positive and bounded, no duplicates. It is run on every set
// received from a server or read from a state file.
func (vs *ValidatorSet) Check() error {
	if err := checkChainID(vs.ChainID); err != nil {
		return err
	}
	if want := OriginPrefix + vs.ChainID; vs.Origin != want {
		return fmt.Errorf("origin %.80q is not %q", vs.Origin, want)
	}
	if n := len(vs.Validators); n == 0 || n > maxValidators {
		return fmt.Errorf("%d validators, want 1 to %d", n, maxValidators)
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
		if v.Power > maxTotalPower-total {
			return fmt.Errorf("total voting power exceeds %d", int64(maxTotalPower))
		}
		total += v.Power
	}
	return nil
}

func (v *Validator) check(chainID string) error {
	addr, err := hex.DecodeString(v.Address)
	if err != nil || len(addr) != 20 {
		return fmt.Errorf("address %.60q: want 40 hex digits", v.Address)
	}
	if want := chainID + "/validator-" + strings.ToLower(v.Address[:8]); v.Name != want {
		return fmt.Errorf("name %.80q: want %s", v.Name, want)
	}
	if v.Power < 1 || v.Power > maxTotalPower {
		return fmt.Errorf("%s: power %d out of range", v.Name, v.Power)
	}
	pub, err := verifierPublicKey(v.Key)
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
	if sum := sha256.Sum256(pub); !bytes.Equal(sum[:20], addr) {
		return fmt.Errorf("%s: address %s is not derived from its key (want %X)", v.Name, v.Address, sum[:20])
	}
	return nil
}

// verifierPublicKey extracts the Ed25519 key from a note verifier key
// "name+hash+base64(0x01||pub)".
func verifierPublicKey(vkey string) (ed25519.PublicKey, error) {
	// Names and hashes contain no '+'; base64 may.
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("not a note verifier key (name+hash+key)")
	}
	b, err := base64.StdEncoding.Strict().DecodeString(parts[2])
	if err != nil || len(b) != 1+ed25519.PublicKeySize || b[0] != 1 {
		return nil, errors.New("not an Ed25519 note verifier key")
	}
	return ed25519.PublicKey(b[1:]), nil
}

func checkChainID(id string) error {
	if id == "" || len(id) > maxChainIDLen {
		return fmt.Errorf("chain id %.60q: want 1 to %d characters", id, maxChainIDLen)
	}
	for _, c := range id {
		// Printable ASCII without space, '+' or '/', so that note key
		// names "<chain_id>/validator-…" stay valid and unambiguous.
		if c <= ' ' || c >= 0x7f || c == '+' || c == '/' {
			return fmt.Errorf("chain id %.60q: character %q not allowed", id, c)
		}
	}
	return nil
}

// Equal reports whether two sets are the same: same chain, and the same
// validators (name, key and power), in any order.
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

// parseValidators parses GET /v1/validators.
func parseValidators(b []byte) (*ValidatorSet, error) {
	var vs ValidatorSet
	if err := decodeStrict(b, &vs); err != nil {
		return nil, malformed("validators: %v", err)
	}
	if err := vs.Check(); err != nil {
		return nil, malformed("validators: %v", err)
	}
	return &vs, nil
}
