package ledger

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// A checkpoint is a C2SP tlog-checkpoint: the log's origin, size and root
// hash, as the text of a signed note (golang.org/x/mod/sumdb/note) that the
// validators cosign through CometBFT vote extensions. Decision record:
// docs/decisions/0040-ledger-checkpoints.md. Its format and the rule that
// trusts it (verify.OpenCheckpoint, verify.Quorum) are package verify's;
// this file assembles checkpoints from vote extensions and carries them in
// blocks.

const (
	// checkpointTxPrefix starts the one non-entry transaction a block may
	// carry: the cosigned checkpoint, first in the block. A canonical JSON
	// entry starts with '{', so the two can never be confused.
	checkpointTxPrefix = 0x00
	// maxValidators is the most signatures a note may carry (x/mod/sumdb/note
	// refuses more than 100), so the most validators a chain may have.
	maxValidators = verify.MaxValidators
)

// Origin is the checkpoint origin line of the ledger with this chain id.
func Origin(chainID string) string { return verify.Origin(chainID) }

// logHead is what a checkpoint states: origin, size and root. It is
// comparable, so a block's checkpoint is checked against the log with ==.
type logHead struct {
	Origin string
	Size   uint64
	Root   [32]byte
}

// Text is the checkpoint's note text.
func (h logHead) Text() string {
	return (&verify.Checkpoint{Origin: h.Origin, Size: h.Size, Root: h.Root}).Text()
}

// validatorSet is the genesis validator set with what checkpoint signing
// and checking need: the public form (verify.ValidatorSet) and each
// member's key, address and note key hash.
type validatorSet struct {
	chainID string
	origin  string
	public  *verify.ValidatorSet
	members []validatorMember // sorted by address
}

type validatorMember struct {
	info    verify.Validator
	pub     ed25519.PublicKey
	address []byte
	keyHash uint32
}

type validatorKey struct {
	pub   ed25519.PublicKey
	power int64
}

func newValidatorSet(chainID string, keys []validatorKey) (*validatorSet, error) {
	if err := verify.CheckChainID(chainID); err != nil {
		return nil, err
	}
	if len(keys) == 0 || len(keys) > maxValidators {
		return nil, fmt.Errorf("validator set: %d validators, want 1 to %d", len(keys), maxValidators)
	}
	vs := &validatorSet{chainID: chainID, origin: verify.Origin(chainID)}
	for _, k := range keys {
		if k.power <= 0 || k.power > 1<<40 {
			return nil, fmt.Errorf("validator set: voting power %d out of range", k.power)
		}
		info, err := verify.NewValidator(chainID, k.pub, k.power)
		if err != nil {
			return nil, fmt.Errorf("validator set: %w", err)
		}
		v, err := note.NewVerifier(info.Key)
		if err != nil {
			return nil, fmt.Errorf("validator set: %w", err)
		}
		vs.members = append(vs.members, validatorMember{info: info, pub: k.pub, address: verify.ValidatorAddress(k.pub), keyHash: v.KeyHash()})
	}
	slices.SortFunc(vs.members, func(a, b validatorMember) int { return bytes.Compare(a.address, b.address) })
	infos := make([]verify.Validator, len(vs.members))
	for i, m := range vs.members {
		infos[i] = m.info
	}
	var err error
	if vs.public, err = verify.NewValidatorSet(chainID, infos); err != nil {
		return nil, fmt.Errorf("validator set: %w", err)
	}
	return vs, nil
}

func (vs *validatorSet) byAddress(addr []byte) *validatorMember {
	i, ok := slices.BinarySearchFunc(vs.members, addr, func(m validatorMember, a []byte) int { return bytes.Compare(m.address, a) })
	if !ok {
		return nil
	}
	return &vs.members[i]
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
// that verify, in validator order. It fails unless the kept signatures
// hold a quorum (verify.Quorum).
func (vs *validatorSet) assembleCheckpoint(c logHead, sigs map[string][]byte) ([]byte, error) {
	text := c.Text()
	var signers []note.Signer
	var power int64
	for _, m := range vs.members {
		sig, ok := sigs[string(m.address)]
		if !ok || !verify.Signature(m.pub, []byte(text), sig) {
			continue
		}
		signers = append(signers, presignedSigner{m.info.Name, m.keyHash, sig})
		power += m.info.Power
	}
	if !verify.Quorum(power, vs.public.TotalPower()) {
		return nil, fmt.Errorf("checkpoint at size %d: signatures hold %d of %d voting power, need more than 2/3", c.Size, power, vs.public.TotalPower())
	}
	return note.Sign(&note.Note{Text: text}, signers...)
}

// encodeCheckpointTx wraps a signed checkpoint note as a block transaction.
func encodeCheckpointTx(signed []byte) []byte {
	return append([]byte{checkpointTxPrefix}, signed...)
}

func isCheckpointTx(tx []byte) bool { return len(tx) > 0 && tx[0] == checkpointTxPrefix }

// parseCheckpointTx checks a checkpoint transaction: the note must be
// trusted by the one rule (verify.OpenCheckpoint against the validator
// set), state exactly want with no extension lines, and carry no
// signature by a key outside the set — a block holds the note as the
// validators' extensions made it, nothing added.
func (vs *validatorSet) parseCheckpointTx(tx []byte, want logHead) ([]byte, error) {
	if !isCheckpointTx(tx) {
		return nil, errors.New("checkpoint transaction: missing 0x00 prefix")
	}
	signed := tx[1:]
	c, err := verify.OpenCheckpoint(signed, vs.public)
	if err != nil {
		return nil, err
	}
	if len(c.Unknown) > 0 {
		return nil, fmt.Errorf("checkpoint transaction: signature by unknown key %s", strings.Join(c.Unknown, ", "))
	}
	if got := (logHead{c.Origin, c.Size, c.Root}); got != want || !bytes.HasPrefix(signed, []byte(want.Text()+"\n")) {
		return nil, fmt.Errorf("checkpoint transaction names size %d root %x, the log after the block before last has size %d root %x",
			c.Size, c.Root, want.Size, want.Root)
	}
	return signed, nil
}
