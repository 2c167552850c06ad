package receipt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// Format names this version of the receipt format.
const Format = "cloister-receipt/v1"

// MaxBytes bounds a receipt file: a policy (at most 1 MiB), a
// certificate, a few dozen entries of at most 64 KiB with their proofs.
const MaxBytes = 8 << 20

// maxEntries bounds the entries of one receipt (a session has one entry
// per step: a few per program, input, output and reader).
const maxEntries = 4096

// Receipt is one session's receipt. Byte fields are standard base64 in
// JSON; Policy and each entry's Tx are the exact texts that were hashed.
type Receipt struct {
	Format  string `json:"format"`
	Session string `json:"session"`
	Node    Node   `json:"node"`
	// Policy is the policy's canonical form (RFC 8785); PolicyHash is hex
	// SHA-256 of it, the hash every entry and the evidence bind.
	Policy     string `json:"policy"`
	PolicyHash string `json:"policy_hash"`
	// SessionCertificate is the DER RA-TLS certificate of the session's
	// TLS key; Evidence is the evidence it carries, as extracted from it
	// (Verify checks that it is), for verifiers that do not parse X.509.
	SessionCertificate []byte   `json:"session_certificate"`
	HPKEPublicKey      []byte   `json:"hpke_public_key"`
	Evidence           Evidence `json:"evidence"`
	Ledger             Ledger   `json:"ledger"`
}

// Node is the node that ran the session, as it says.
type Node struct {
	PlatformKey  string `json:"platform_key"` // "ed25519:…"
	IsolateClass string `json:"isolate_class"`
}

// Evidence is the attestation evidence of the session's certificate.
type Evidence struct {
	Class      string   `json:"class"`
	Data       []byte   `json:"data"`
	Collateral [][]byte `json:"collateral,omitempty"`
}

// Ledger is the ledger part: the validator set the receipt was made
// against, one checkpoint, and the entries with their inclusion proofs to
// it.
type Ledger struct {
	Origin       string               `json:"origin"`
	ValidatorSet *verify.ValidatorSet `json:"validator_set"`
	// Checkpoint is the signed note, as the ledger served it.
	Checkpoint string  `json:"checkpoint"`
	Entries    []Entry `json:"entries"`
	// Consistency, when present, proves that the checkpoint extends (or is
	// extended by) the checkpoint of size Trusted that the receipt's maker
	// trusted: the RFC 6962 consistency proof between the two sizes.
	Consistency *Consistency `json:"consistency,omitempty"`
}

// Entry is one ledger entry: its index, its transaction (the canonical
// JSON the log hashes) and the audit path from its leaf to the
// checkpoint's root.
type Entry struct {
	Index uint64   `json:"index"`
	Tx    string   `json:"tx"`
	Proof [][]byte `json:"proof"`
}

// Consistency is a consistency proof between a trusted checkpoint of size
// Trusted and the receipt's checkpoint, from the smaller to the larger.
type Consistency struct {
	Trusted uint64   `json:"trusted"`
	Hashes  [][]byte `json:"hashes"`
}

// Parse reads a receipt: strict JSON (no unknown field), at most MaxBytes,
// of this Format. It checks shape only; Verify checks the content.
func Parse(b []byte) (*Receipt, error) {
	if len(b) > MaxBytes {
		return nil, fmt.Errorf("receipt: %d bytes, limit %d", len(b), MaxBytes)
	}
	var r Receipt
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("receipt: not a receipt: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("receipt: data after the receipt object")
	}
	if r.Format != Format {
		return nil, fmt.Errorf("receipt: format %q, this verifier reads %q", r.Format, Format)
	}
	if r.Ledger.ValidatorSet == nil {
		return nil, errors.New(`receipt: no ledger "validator_set"`)
	}
	if n := len(r.Ledger.Entries); n == 0 || n > maxEntries {
		return nil, fmt.Errorf("receipt: %d ledger entries, want 1 to %d", n, maxEntries)
	}
	for _, e := range r.Ledger.Entries {
		if len(e.Proof) > 64 {
			return nil, fmt.Errorf("receipt: entry %d: proof of %d hashes", e.Index, len(e.Proof))
		}
	}
	if c := r.Ledger.Consistency; c != nil && len(c.Hashes) > 128 {
		return nil, fmt.Errorf("receipt: consistency proof of %d hashes", len(c.Hashes))
	}
	return &r, nil
}

// Encode writes the receipt as indented JSON with a final newline: the
// file `cloister receipt get` saves and the console offers for download.
func (r *Receipt) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
