package protocol

import (
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/cloisterhq/cloister/jcs"
)

// Replicated sessions (docs/piee.md, "Replicated sessions"; decision
// 0134): a policy asking for N replicas runs as N sessions on nodes of N
// organisations, one replica set. The set id has a session id's form; it
// seeds every replica's deterministic run (Seed(policy hash, set id)), so
// that honest replicas compute the same bytes.

// ReplicaResultDomain prefixes the message a replica's session key signs
// when its node commits the replica's result digest to the ledger.
const ReplicaResultDomain = "cloister/replica-result/v1\n"

// replicaKeyLabel starts the derivation of a replica set's digest key.
const replicaKeyLabel = "cloister/replica-digest-key/v1\x00"

// ReplicaOutput is one output of a replica's run as its digest covers it.
type ReplicaOutput struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// ReplicaDigestKey is the key of a replica set's result digests: SHA-256
// over a label, the set id, the program's SHA-256 and, in the policy's
// order, each uploaded input's name and plaintext SHA-256 (inputs is
// name → hex; inputs not known to the isolate's node in plaintext are
// left out). Every honest replica derives the same key; a party that
// does not know the inputs cannot test guesses of an output against the
// digests on the ledger.
func ReplicaDigestKey(set, programSHA256 string, inputNames []string, inputs map[string]string) [32]byte {
	h := sha256.New()
	h.Write([]byte(replicaKeyLabel))
	h.Write([]byte(set + "\x00" + programSHA256 + "\x00"))
	for _, n := range inputNames {
		if d, ok := inputs[n]; ok {
			h.Write([]byte(n + "\x00" + d + "\x00"))
		}
	}
	var k [32]byte
	copy(k[:], h.Sum(nil))
	return k
}

// ReplicaDigest is a replica's result digest, the value replicas must
// agree on: HMAC-SHA256 under ReplicaDigestKey over the canonical JSON of
// the run's outcome, exit code and outputs (name, size, plaintext
// SHA-256, by name). It is returned as lowercase hex.
func ReplicaDigest(key [32]byte, outcome string, exitCode int, outputs []ReplicaOutput) (string, error) {
	outs := append([]ReplicaOutput{}, outputs...)
	sort.Slice(outs, func(i, j int) bool { return outs[i].Name < outs[j].Name })
	raw, err := json.Marshal(map[string]any{"outcome": outcome, "exit_code": exitCode, "outputs": outs})
	if err != nil {
		return "", err
	}
	canon, err := jcs.Canonicalize(raw)
	if err != nil {
		return "", err
	}
	m := hmac.New(sha256.New, key[:])
	m.Write(canon)
	return hex.EncodeToString(m.Sum(nil)), nil
}

// ReplicaResultMessage is the exact byte string a replica's session key
// signs: ReplicaResultDomain followed by the canonical JSON of
// {"digest","policy_hash","session","set"}. The ledger and every reader
// check it against the session key the replica's evidence binds.
func ReplicaResultMessage(set, session, policyHash, digest string) ([]byte, error) {
	raw, err := json.Marshal(map[string]string{"set": set, "session": session, "policy_hash": policyHash, "digest": digest})
	if err != nil {
		return nil, err
	}
	canon, err := jcs.Canonicalize(raw)
	if err != nil {
		return nil, err
	}
	return append([]byte(ReplicaResultDomain), canon...), nil
}

// VerifyReplicaResult checks a replica's signature sig (ASN.1 ECDSA) over
// ReplicaResultMessage under key, the DER public key (P-256) of the
// replica's session, the key its evidence binds.
func VerifyReplicaResult(key, sig []byte, set, session, policyHash, digest string) error {
	pub, err := x509.ParsePKIXPublicKey(key)
	if err != nil {
		return fmt.Errorf("session key: %w", err)
	}
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return errors.New("session key is not an ECDSA key")
	}
	msg, err := ReplicaResultMessage(set, session, policyHash, digest)
	if err != nil {
		return err
	}
	h := sha256.Sum256(msg)
	if !ecdsa.VerifyASN1(ek, h[:], sig) {
		return errors.New("the replica's result signature does not verify under its session key")
	}
	return nil
}
