package protocol

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Domain-separation labels. Each hashed or signed structure starts with its
// own label, so that no message of one kind can be replayed as another.
const (
	AttestLabel  = "cloister/v1/session-attest\x00"
	RequestLabel = "cloister/v1/session-request\x00"
	SeedLabel    = "cloister/v1/session-seed\x00"
	RATLSLabel   = "cloister/v1/session-ratls\x00"
	// AdmissionTokenLabel precedes the payload an operator signs in an
	// admission token (package node, AdmissionToken).
	AdmissionTokenLabel = "cloister/v1/admission-token\x00"
)

// HPKE info prefixes of sealed envelopes; see SealInfo.
const (
	KindProgram = "cloister/v1/program"
	KindInput   = "cloister/v1/input"
	KindOutput  = "cloister/v1/output"
	// The content key of a streamed program or input (a sealed file),
	// sealed to the session key.
	KindProgramKey = "cloister/v1/program-key"
	KindInputKey   = "cloister/v1/input-key"
	// The content key of a streamed output (a sealed file), sealed to
	// one reader.
	KindOutputKey = "cloister/v1/output-key"
)

// Operations a principal signs (the operation field of RequestMessage).
const (
	OpUploadProgram = "upload-program"
	OpUploadInput   = "upload-input"
	OpGetResult     = "get-result"
	OpClose         = "close"
	// Beginning a streamed upload: payload the sealed file's size, 8
	// big-endian bytes. Its commit is signed with OpUploadProgram or
	// OpUploadInput over StreamManifest.
	OpBeginUploadProgram = "begin-upload-program"
	OpBeginUploadInput   = "begin-upload-input"
	// OpCreateSession is signed by a session's creator: session id empty,
	// payload hash SHA-256 of the policy document as sent, policy hash
	// zero (the node has not parsed the policy yet when it checks).
	OpCreateSession = "create-session"
)

// NonceSize is the size of the attestation nonce and of request nonces.
const NonceSize = 32

// SessionIDSize is the number of random bytes in a session id; the id is
// their lowercase hex encoding.
const SessionIDSize = 16

// ServerNameSuffix ends every session's TLS server name (SNI).
const ServerNameSuffix = ".session.cloister"

// MaxRequestSkew bounds how far a signed request's timestamp may be from
// the node's clock. Together with the node's nonce cache it limits replay.
const MaxRequestSkew = 5 * time.Minute

// ValidSessionID reports whether id has the form the node issues: 32
// lowercase hexadecimal characters.
func ValidSessionID(id string) error {
	if len(id) != 2*SessionIDSize {
		return fmt.Errorf("session id %q: want %d hexadecimal characters, got %d", truncate(id), 2*SessionIDSize, len(id))
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("session id %q: only lowercase hexadecimal characters are allowed", truncate(id))
		}
	}
	return nil
}

// ServerName returns the TLS server name that reaches session id.
func ServerName(id string) string { return id + ServerNameSuffix }

// SessionFromServerName returns the session id a server name designates,
// or "" if it is not a session name.
func SessionFromServerName(name string) string {
	id, ok := strings.CutSuffix(strings.ToLower(name), ServerNameSuffix)
	if !ok || ValidSessionID(id) != nil {
		return ""
	}
	return id
}

// ReportData is the 64 bytes a session's evidence binds:
//
//	SHA-512(AttestLabel ‖ policyHash ‖ SHA-256(tlsSPKI) ‖ SHA-256(hpkePublicKey) ‖ nonce)
//
// tlsSPKI is the DER SubjectPublicKeyInfo of the session's TLS certificate
// as the client saw it in the handshake; hpkePublicKey is the serialised
// HPKE public key the session returned; nonce is the client's fresh nonce.
// Every component has a fixed size, so concatenation is unambiguous.
func ReportData(policyHash [32]byte, tlsSPKI, hpkePublicKey, nonce []byte) [64]byte {
	spki := sha256.Sum256(tlsSPKI)
	hk := sha256.Sum256(hpkePublicKey)
	h := sha512.New()
	h.Write([]byte(AttestLabel))
	h.Write(policyHash[:])
	h.Write(spki[:])
	h.Write(hk[:])
	n := sha256.Sum256(nonce) // fixed width whatever the caller passed
	h.Write(n[:])
	var out [64]byte
	copy(out[:], h.Sum(nil))
	return out
}

// RATLSNonce is the nonce claim of a session's RA-TLS certificate:
// SHA-256(RATLSLabel ‖ policyHash ‖ SHA-256(hpkePublicKey)). With the
// certificate's pubkey-hash claim it binds the policy, the TLS key and the
// HPKE key, like ReportData but without a client nonce (the certificate is
// made once per session, so it proves binding, not freshness).
func RATLSNonce(policyHash [32]byte, hpkePublicKey []byte) [32]byte {
	hk := sha256.Sum256(hpkePublicKey)
	h := sha256.New()
	h.Write([]byte(RATLSLabel))
	h.Write(policyHash[:])
	h.Write(hk[:])
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// RequestMessage is what a principal signs with its Ed25519 key to
// authorise operation op on session sessionID. name is the program, input
// or output concerned ("" for close); payloadHash is SHA-256 of the sealed
// envelope uploaded (zero for requests without a payload); unixMS and
// nonce make each signature single-use. Variable-length fields are
// length-prefixed.
func RequestMessage(sessionID, op, name string, payloadHash, policyHash [32]byte, unixMS int64, nonce []byte) []byte {
	m := make([]byte, 0, 256)
	m = append(m, RequestLabel...)
	m = appendField(m, []byte(sessionID))
	m = appendField(m, []byte(op))
	m = appendField(m, []byte(name))
	m = append(m, payloadHash[:]...)
	m = append(m, policyHash[:]...)
	m = binary.BigEndian.AppendUint64(m, uint64(unixMS))
	m = appendField(m, nonce)
	return m
}

func appendField(m, f []byte) []byte {
	m = binary.BigEndian.AppendUint32(m, uint32(len(f)))
	return append(m, f...)
}

// StreamManifestLabel starts StreamManifest.
const StreamManifestLabel = "cloister/v1/stream-manifest\x00"

// StreamManifest is what a provider signs to commit a streamed upload, in
// place of an envelope: the sealed file's size and SHA-256, and the
// envelope of its content key. Its SHA-256 stands for the upload where an
// envelope's would (the upload's event, the receipt).
func StreamManifest(size int64, ciphertextSHA256 [32]byte, keyEnvelope []byte) []byte {
	m := append([]byte(StreamManifestLabel), binary.BigEndian.AppendUint64(nil, uint64(size))...)
	m = append(m, ciphertextSHA256[:]...)
	return appendField(m, keyEnvelope)
}

// SealInfo is the HPKE info of an envelope of the given kind (KindProgram,
// KindInput, KindOutput) for session sessionID and item name. For outputs,
// reader is the principal the envelope is sealed to; it is "" otherwise.
// The policy hash goes in the AAD (see SealAAD).
func SealInfo(kind, sessionID, name, reader string) []byte {
	s := kind + "\x00" + sessionID + "\x00" + name
	if reader != "" {
		s += "\x00" + reader
	}
	return []byte(s)
}

// SealAAD is the additional data every session envelope is bound to: the
// policy hash, so that an envelope made for one policy never opens under
// another.
func SealAAD(policyHash [32]byte) []byte { return append([]byte(nil), policyHash[:]...) }

// Seed is the randomness seed of a deterministic run: the same policy and
// session give the same seed on any node, so replicas agree byte for byte.
func Seed(policyHash [32]byte, sessionID string) [32]byte {
	h := sha256.New()
	h.Write([]byte(SeedLabel))
	h.Write(policyHash[:])
	h.Write([]byte(sessionID))
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return s
}

// SPKIHash returns hex SHA-256 of a DER SubjectPublicKeyInfo, the form in
// which a session's TLS key is shown to people.
func SPKIHash(spki []byte) string {
	h := sha256.Sum256(spki)
	return hex.EncodeToString(h[:])
}

func truncate(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}

// BlobRequestLabel starts the message a principal signs to write to a
// Cloister blob store (package blob/server).
const BlobRequestLabel = "cloister/v1/blob-request\x00"

// BlobAuthScheme is the HTTP Authorization scheme of signed blob store
// requests: `Cloister-Ed25519 key=ed25519:…, t=UNIXMS, nonce=HEX, sig=BASE64`.
const BlobAuthScheme = "Cloister-Ed25519"

// BlobRequestMessage is what a signed blob store request signs:
//
//	BlobRequestLabel ‖ method ‖ 0 ‖ host ‖ 0 ‖ request URI ‖ 0 ‖ unixMs (8 bytes, big-endian) ‖ nonce
//
// The request URI (path and query) carries the repository, the upload and
// the digest, so a signature is good for one operation on one store; the
// body is checked against the digest, not signed.
func BlobRequestMessage(method, host, requestURI string, unixMs int64, nonce []byte) []byte {
	m := make([]byte, 0, len(BlobRequestLabel)+len(method)+len(host)+len(requestURI)+3+8+len(nonce))
	m = append(m, BlobRequestLabel...)
	m = append(m, method...)
	m = append(m, 0)
	m = append(m, host...)
	m = append(m, 0)
	m = append(m, requestURI...)
	m = append(m, 0)
	m = binary.BigEndian.AppendUint64(m, uint64(unixMs))
	return append(m, nonce...)
}
