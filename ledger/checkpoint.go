package ledger

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// A checkpoint is a C2SP tlog-checkpoint: the log's origin, size and root
// hash, as the text of a signed note (golang.org/x/mod/sumdb/note) that the
// validators cosign through CometBFT vote extensions. Decision record:
// docs/decisions/0040-ledger-checkpoints.md.

const (
	originPrefix = "cloister.ledger/"
	// checkpointTxPrefix starts the one non-entry transaction a block may
	// carry: the cosigned checkpoint, first in the block. A canonical JSON
	// entry starts with '{', so the two can never be confused.
	checkpointTxPrefix = 0x00
	// maxValidators is the most signatures a note may carry (x/mod/sumdb/note
	// refuses more than 100), so the most validators a chain may have.
	maxValidators = 100
	// maxCheckpointBytes bounds a checkpoint note (text plus 100 signature
	// lines of at most ~200 bytes each).
	maxCheckpointBytes = 32 << 10
)

// Origin is the checkpoint origin line of the ledger with this chain id.
func Origin(chainID string) string { return originPrefix + chainID }

// Checkpoint is the signed statement "the log of this origin has Size
// entries and this RFC 6962 root".
type Checkpoint struct {
	Origin string
	Size   uint64
	Root   [32]byte
}

// Text is the checkpoint body: origin, size and base64 root, one per line.
func (c Checkpoint) Text() string {
	return c.Origin + "\n" + strconv.FormatUint(c.Size, 10) + "\n" + base64.StdEncoding.EncodeToString(c.Root[:]) + "\n"
}

// ParseCheckpoint reads a checkpoint body (the text of the note, without
// signatures). Extension lines are refused: this ledger writes none.
func ParseCheckpoint(text string) (Checkpoint, error) {
	lines := strings.Split(text, "\n")
	if len(lines) != 4 || lines[3] != "" {
		return Checkpoint{}, errors.New("checkpoint: want exactly three lines (origin, size, root hash)")
	}
	var c Checkpoint
	c.Origin = lines[0]
	if c.Origin == "" {
		return Checkpoint{}, errors.New("checkpoint: empty origin line")
	}
	n, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(n, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("checkpoint size %.30q: not a decimal number", lines[1])
	}
	c.Size = n
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != 32 {
		return Checkpoint{}, fmt.Errorf("checkpoint root %.60q: not a base64 32-byte hash", lines[2])
	}
	copy(c.Root[:], root)
	return c, nil
}

// ValidatorInfo describes one validator as /v1/validators publishes it.
type ValidatorInfo struct {
	// Name is the signer name in checkpoint notes:
	// "<chain_id>/validator-<first 8 hex of the CometBFT address>".
	Name string `json:"name"`
	// Key is the note verifier key "name+hash+base64(0x01||pubkey)" built
	// from the validator's CometBFT consensus Ed25519 key.
	Key string `json:"key"`
	// Power is the validator's voting power, fixed at genesis.
	Power int64 `json:"power"`
	// Address is the CometBFT validator address, lower-case hex.
	Address string `json:"address"`
}

// validatorAddress is CometBFT's address of an Ed25519 key: the first 20
// bytes of SHA-256 of the public key.
func validatorAddress(pub ed25519.PublicKey) []byte {
	h := sha256.Sum256(pub)
	return h[:20]
}

// ValidatorKeyName is the note signer name of a validator.
func ValidatorKeyName(chainID string, address []byte) string {
	return chainID + "/validator-" + hex.EncodeToString(address[:4])
}

// validatorSet is the fixed genesis validator set with what checkpoint
// signing and checking need.
type validatorSet struct {
	chainID   string
	origin    string
	members   []validatorMember // sorted by address
	total     int64
	verifiers note.Verifiers
}

type validatorMember struct {
	info    ValidatorInfo
	pub     ed25519.PublicKey
	address []byte
	keyHash uint32
}

type validatorKey struct {
	pub   ed25519.PublicKey
	power int64
}

func newValidatorSet(chainID string, keys []validatorKey) (*validatorSet, error) {
	if err := checkChainID(chainID); err != nil {
		return nil, err
	}
	if len(keys) == 0 || len(keys) > maxValidators {
		return nil, fmt.Errorf("validator set: %d validators, want 1 to %d", len(keys), maxValidators)
	}
	vs := &validatorSet{chainID: chainID, origin: Origin(chainID)}
	var vlist []note.Verifier
	names := map[string]bool{}
	for _, k := range keys {
		if len(k.pub) != ed25519.PublicKeySize {
			return nil, errors.New("validator set: a validator key is not an Ed25519 public key")
		}
		if k.power <= 0 || k.power > 1<<40 {
			return nil, fmt.Errorf("validator set: voting power %d out of range", k.power)
		}
		addr := validatorAddress(k.pub)
		name := ValidatorKeyName(chainID, addr)
		if names[name] {
			return nil, fmt.Errorf("validator set: two validators share the name %s", name)
		}
		names[name] = true
		vkey, err := note.NewEd25519VerifierKey(name, k.pub)
		if err != nil {
			return nil, fmt.Errorf("validator set: %w", err)
		}
		v, err := note.NewVerifier(vkey)
		if err != nil {
			return nil, fmt.Errorf("validator set: %w", err)
		}
		vlist = append(vlist, v)
		vs.members = append(vs.members, validatorMember{
			info: ValidatorInfo{Name: name, Key: vkey, Power: k.power, Address: hex.EncodeToString(addr)},
			pub:  k.pub, address: addr, keyHash: v.KeyHash(),
		})
		vs.total += k.power
	}
	slices.SortFunc(vs.members, func(a, b validatorMember) int { return bytes.Compare(a.address, b.address) })
	vs.verifiers = note.VerifierList(vlist...)
	return vs, nil
}

func (vs *validatorSet) byAddress(addr []byte) *validatorMember {
	i, ok := slices.BinarySearchFunc(vs.members, addr, func(m validatorMember, a []byte) int { return bytes.Compare(m.address, a) })
	if !ok {
		return nil
	}
	return &vs.members[i]
}

func (vs *validatorSet) infos() []ValidatorInfo {
	out := make([]ValidatorInfo, len(vs.members))
	for i, m := range vs.members {
		out[i] = m.info
	}
	return out
}

// quorum reports whether power is more than 2/3 of the total.
func quorum(power, total int64) bool { return 3*power > 2*total }

// checkChainID keeps chain ids to characters that are safe in a note
// signer name (no '+', no spaces) and in file names.
func checkChainID(id string) error {
	if id == "" || len(id) > 50 {
		return fmt.Errorf("chain id %.60q: want 1 to 50 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("chain id %q: only letters, digits, '.', '_' and '-' are allowed", id)
		}
	}
	return nil
}

// presignedSigner lets note.Sign assemble a note from signatures collected
// from vote extensions: it "signs" by returning the signature it holds.
type presignedSigner struct {
	name string
	hash uint32
	sig  []byte
}

func (s presignedSigner) Name() string                    { return s.name }
func (s presignedSigner) KeyHash() uint32                 { return s.hash }
func (s presignedSigner) Sign(msg []byte) ([]byte, error) { return s.sig, nil }

// assembleCheckpoint builds the signed note for c from per-validator
// signatures (keyed by validator address as a string), keeping only those
// that verify, in validator order. It fails unless the kept signatures hold
// more than 2/3 of the voting power.
func (vs *validatorSet) assembleCheckpoint(c Checkpoint, sigs map[string][]byte) ([]byte, error) {
	text := c.Text()
	var signers []note.Signer
	var power int64
	for _, m := range vs.members {
		sig, ok := sigs[string(m.address)]
		if !ok || !verifyEd25519(m.pub, []byte(text), sig) {
			continue
		}
		signers = append(signers, presignedSigner{m.info.Name, m.keyHash, sig})
		power += m.info.Power
	}
	if !quorum(power, vs.total) {
		return nil, fmt.Errorf("checkpoint at size %d: signatures hold %d of %d voting power, need more than 2/3", c.Size, power, vs.total)
	}
	return note.Sign(&note.Note{Text: text}, signers...)
}

// openCheckpoint verifies a signed checkpoint note against the validator
// set: every signature must be from a validator and valid, and together
// they must hold more than 2/3 of the voting power.
func (vs *validatorSet) openCheckpoint(msg []byte) (Checkpoint, error) {
	return openCheckpoint(msg, vs.origin, vs.verifiers, func(name string) int64 {
		for _, m := range vs.members {
			if m.info.Name == name {
				return m.info.Power
			}
		}
		return 0
	}, vs.total)
}

func openCheckpoint(msg []byte, origin string, verifiers note.Verifiers, power func(string) int64, total int64) (Checkpoint, error) {
	if len(msg) > maxCheckpointBytes {
		return Checkpoint{}, fmt.Errorf("checkpoint note is %d bytes, limit %d", len(msg), maxCheckpointBytes)
	}
	n, err := note.Open(msg, verifiers)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("checkpoint note: %w", err)
	}
	if len(n.UnverifiedSigs) > 0 {
		return Checkpoint{}, fmt.Errorf("checkpoint note: signature by unknown key %s", n.UnverifiedSigs[0].Name)
	}
	c, err := ParseCheckpoint(n.Text)
	if err != nil {
		return Checkpoint{}, err
	}
	if c.Origin != origin {
		return Checkpoint{}, fmt.Errorf("checkpoint origin %q, want %q", c.Origin, origin)
	}
	var signed int64
	for _, s := range n.Sigs {
		signed += power(s.Name)
	}
	if !quorum(signed, total) {
		return Checkpoint{}, fmt.Errorf("checkpoint at size %d: signatures hold %d of %d voting power, need more than 2/3", c.Size, signed, total)
	}
	return c, nil
}

// VerifyCheckpoint checks a signed checkpoint note of the ledger with the
// given origin against a validator set (as published by /v1/validators and
// pinned by the client): every signature must come from a listed key and
// verify, and the signers must hold more than 2/3 of the total power.
func VerifyCheckpoint(msg []byte, origin string, validators []ValidatorInfo) (Checkpoint, error) {
	var list []note.Verifier
	powers := map[string]int64{}
	var total int64
	for _, v := range validators {
		nv, err := note.NewVerifier(v.Key)
		if err != nil {
			return Checkpoint{}, fmt.Errorf("validator %s: key: %w", v.Name, err)
		}
		if nv.Name() != v.Name || v.Power <= 0 {
			return Checkpoint{}, fmt.Errorf("validator %s: key name %s or power %d does not fit", v.Name, nv.Name(), v.Power)
		}
		if _, dup := powers[v.Name]; dup {
			return Checkpoint{}, fmt.Errorf("validator %s listed twice", v.Name)
		}
		list = append(list, nv)
		powers[v.Name] = v.Power
		total += v.Power
	}
	if total == 0 {
		return Checkpoint{}, errors.New("checkpoint: empty validator set")
	}
	return openCheckpoint(msg, origin, note.VerifierList(list...), func(name string) int64 { return powers[name] }, total)
}

// encodeCheckpointTx wraps a signed checkpoint note as a block transaction.
func encodeCheckpointTx(signed []byte) []byte {
	return append([]byte{checkpointTxPrefix}, signed...)
}

func isCheckpointTx(tx []byte) bool { return len(tx) > 0 && tx[0] == checkpointTxPrefix }

// parseCheckpointTx checks a checkpoint transaction against the validator
// set and the checkpoint the block must carry.
func (vs *validatorSet) parseCheckpointTx(tx []byte, want Checkpoint) ([]byte, error) {
	if !isCheckpointTx(tx) {
		return nil, errors.New("checkpoint transaction: missing 0x00 prefix")
	}
	signed := tx[1:]
	c, err := vs.openCheckpoint(signed)
	if err != nil {
		return nil, err
	}
	if c != want {
		return nil, fmt.Errorf("checkpoint transaction names size %d root %x, the log after the block before last has size %d root %x",
			c.Size, c.Root, want.Size, want.Root)
	}
	return signed, nil
}
