package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"unicode"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"

	cfg "github.com/cometbft/cometbft/config"
	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	cmtjson "github.com/cometbft/cometbft/libs/json"
	"github.com/cometbft/cometbft/privval"
)

// Consortium members. A member is a key the consortium has admitted: a
// member.admitted entry names it, and no member.removed entry has ended
// its membership since. Nodes in consortium admission mode let members
// create sessions; the dispatcher, federation scheduler and replica
// coordinator of the organisations sign with member keys.
//
// Who speaks for the consortium is, for now, any validator of the chain:
// the entry's submitter must be a genesis validator's consensus key
// (Ed25519, as CometBFT's priv_validator_key.json holds it). Membership by
// governance (a threshold of current members, validator-set changes as
// entries) replaces this authority rule, not the entries or the state
// they build: the members bucket keeps, per key, the index of the entry
// that admitted it and of the one that removed it.
//
//	members: key → be64(admitted at) ‖ be64(removed at, 0 if not) ‖ name

// maxMemberName bounds a member's name (an organisation's, for people).
const maxMemberName = 64

// requireValidator refuses a submitter that is not a validator of the
// chain (the validators InitChain stored).
func (c *ruleCtx) requireValidator() *verify.RejectedError {
	vals, err := readValidators(c.v)
	if err != nil {
		return reject(verify.CodeUnavailable, "%s: %v", c.body.kind, err)
	}
	for _, v := range vals {
		if bytes.Equal(v.PubKey, c.pub) {
			return nil
		}
	}
	return reject(verify.CodeUnauthorized, "%s entries come from a validator of the chain (signed with its consensus key); the submitter is not one", c.body.kind)
}

// memberKey reads the "member" field: a valid Ed25519 key.
func (c *ruleCtx) memberKey() (ed25519.PublicKey, *verify.RejectedError) {
	s, rej := c.body.str("member", true, 64)
	if rej != nil {
		return nil, rej
	}
	pk, err := protocol.ParseEd25519Key(s)
	if err != nil {
		return nil, reject(verify.CodeMalformed, "%s body member: %v", c.body.kind, err)
	}
	if err := checkSubmitterKey(pk); err != nil {
		return nil, reject(verify.CodeMalformed, "%s body member: %v", c.body.kind, err)
	}
	return pk, nil
}

// memberEntry checks what both member kinds share: the body's fields, a
// validator as submitter, the member key.
func (c *ruleCtx) memberEntry(fields ...string) (ed25519.PublicKey, *verify.RejectedError) {
	if rej := c.body.only(fields...); rej != nil {
		return nil, rej
	}
	if rej := c.requireValidator(); rej != nil {
		return nil, rej
	}
	return c.memberKey()
}

func ruleMemberAdmitted(c *ruleCtx) ([]write, *verify.RejectedError) {
	pk, rej := c.memberEntry("member", "name")
	if rej != nil {
		return nil, rej
	}
	name, rej := c.body.str("name", false, maxMemberName)
	if rej != nil {
		return nil, rej
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return nil, reject(verify.CodeMalformed, "member.admitted body name: control characters are not allowed")
		}
	}
	if cur := c.v.get(bucketMembers, pk); len(cur) >= 16 {
		if removed, _ := getU64(cur[8:16]); removed == 0 {
			at, _ := getU64(cur[:8])
			return nil, reject(verify.CodeReplay, "member.admitted: %s is a member already (entry %d)", protocol.FormatEd25519Key(pk), at)
		}
	}
	val := append(append(be64(c.index), be64(0)...), name...)
	return []write{{bucketMembers, bytes.Clone(pk), val}}, nil
}

func ruleMemberRemoved(c *ruleCtx) ([]write, *verify.RejectedError) {
	pk, rej := c.memberEntry("member")
	if rej != nil {
		return nil, rej
	}
	cur := c.v.get(bucketMembers, pk)
	if len(cur) < 16 {
		return nil, reject(verify.CodeMissingReference, "member.removed: %s was never admitted", protocol.FormatEd25519Key(pk))
	}
	if removed, _ := getU64(cur[8:16]); removed != 0 {
		return nil, reject(verify.CodeReplay, "member.removed: %s was removed already (entry %d)", protocol.FormatEd25519Key(pk), removed)
	}
	val := append(append(bytes.Clone(cur[:8]), be64(c.index)...), cur[16:]...)
	return []write{{bucketMembers, bytes.Clone(pk), val}}, nil
}

// Member is a consortium membership as the ledger's state holds it.
type Member struct {
	Key      string `json:"member"` // "ed25519:..."
	Name     string `json:"name,omitempty"`
	Admitted uint64 `json:"admitted"`          // index of the member.admitted entry
	Removed  uint64 `json:"removed,omitempty"` // index of the member.removed entry; 0 while a member
}

func (ln *ledgerNode) member(key ed25519.PublicKey) (*Member, error) {
	var m *Member
	err := ln.store.view(func(r reader) error {
		cur := r.get(bucketMembers, key)
		if len(cur) < 16 {
			return nil
		}
		at, _ := getU64(cur[:8])
		rm, _ := getU64(cur[8:16])
		m = &Member{Key: protocol.FormatEd25519Key(key), Name: string(cur[16:]), Admitted: at, Removed: rm}
		return nil
	})
	return m, err
}

// IsMember reports whether key is a consortium member in the committed
// state.
func (e *Embedded) IsMember(_ context.Context, key ed25519.PublicKey) (bool, error) {
	m, err := e.ln.member(key)
	return m != nil && m.Removed == 0, err
}

// handleMember serves GET /v1/members/{key}: key is the Ed25519 key in
// lower-case hex. 200 with the membership (removed or not), 404 if the
// key was never admitted.
func (ln *ledgerNode) handleMember(w http.ResponseWriter, r *http.Request) {
	raw, err := hex.DecodeString(r.PathValue("key"))
	if err != nil || len(raw) != ed25519.PublicKeySize {
		writeError(w, http.StatusBadRequest, verify.CodeMalformed, "member key: want the 32-byte Ed25519 key in hex")
		return
	}
	m, err := ln.member(raw)
	switch {
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, verify.CodeUnavailable, "reading the ledger: %v", err)
	case m == nil:
		writeError(w, http.StatusNotFound, verify.CodeNotFound, "%s was never admitted as a member", protocol.FormatEd25519Key(raw))
	default:
		writeJSON(w, http.StatusOK, m)
	}
}

// ValidatorKey reads the consensus key of the validator (or embedded
// ledger) whose home is home: the key that signs member.admitted and
// member.removed entries for now. It does not touch the signing state.
func ValidatorKey(home string) (ed25519.PrivateKey, error) {
	c := cfg.DefaultConfig()
	c.SetRoot(home)
	key, err := readPVKey(c.PrivValidatorKeyFile())
	if err != nil {
		return nil, err
	}
	return ed25519.PrivateKey(key.PrivKey.Bytes()), nil
}

// readPVKey reads and checks a CometBFT validator key file (privval's own
// loader exits the process on a bad one).
func readPVKey(path string) (privval.FilePVKey, error) {
	var key privval.FilePVKey
	kb, err := os.ReadFile(path)
	if err != nil {
		return key, fmt.Errorf("validator key: %w", err)
	}
	if err := cmtjson.Unmarshal(kb, &key); err != nil || key.PrivKey == nil {
		return key, fmt.Errorf("validator key %s: not a CometBFT key file (%v)", path, err)
	}
	if key.PrivKey.Type() != cmted25519.KeyType {
		return key, fmt.Errorf("validator key %s: type %s, checkpoints need ed25519", path, key.PrivKey.Type())
	}
	return key, nil
}

// ReadValidatorPublicKey reads the public key of a CometBFT validator key
// file (priv_validator_key.json), for naming a validator in a proposal.
func ReadValidatorPublicKey(path string) (ed25519.PublicKey, error) {
	key, err := readPVKey(path)
	if err != nil {
		return nil, err
	}
	return ed25519.PublicKey(key.PubKey.Bytes()), nil
}
