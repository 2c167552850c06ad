package broker

import (
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"

	"github.com/cloisterhq/cloister/attest"
)

// Domain-separation labels of what the broker protocol hashes or signs.
const (
	InfoLabel     = "cloister/v1/broker-info\x00"
	ReleaseLabel  = "cloister/v1/key-release\x00"
	RegisterLabel = "cloister/v1/broker-register\x00"
	// ShareToBroker and ShareToSession are the HPKE info prefixes of a
	// share sealed by its owner to a broker, and by a broker to a session.
	ShareToBroker  = "cloister/v1/key-share/broker"
	ShareToSession = "cloister/v1/key-share/session"
)

// NonceSize is the size of the nonces of both directions: an owner's
// (for the broker's evidence) and a broker's (for an isolate's).
const NonceSize = 32

// Info is what GET /v1/info answers: the broker's keys, and evidence
// binding them to the asker's nonce (InfoReportData).
type Info struct {
	SigningKey string           `json:"signing_key"`
	SealingKey string           `json:"sealing_key"`
	Evidence   *attest.Evidence `json:"evidence"`
}

// Registration is what an owner sends to POST /v1/keys: share Share (of
// Threshold) of artifact's content key, HPKE-sealed to the broker
// (ShareToBroker info), signed by the owner over RegistrationMessage.
type Registration struct {
	Owner     string `json:"owner"`
	Artifact  string `json:"artifact"`
	Share     int    `json:"share"`
	Threshold int    `json:"threshold"`
	Envelope  []byte `json:"envelope"`
	Time      string `json:"time"`
	Signature []byte `json:"signature"`
}

// ReleaseRequest is what an isolate sends to POST /v1/release: the grant
// it claims, its session and HPKE key, the broker's nonce and fresh
// evidence whose report data is ReleaseReportData over all of them.
type ReleaseRequest struct {
	Owner      string           `json:"owner"`
	Artifact   string           `json:"artifact"`
	Grant      uint64           `json:"grant"`
	Node       string           `json:"node"`
	Session    string           `json:"session"`
	PolicyHash string           `json:"policy_hash"`
	SessionKey string           `json:"session_key"`
	Nonce      []byte           `json:"nonce"`
	Evidence   *attest.Evidence `json:"evidence"`
}

// ReleaseResponse carries the share sealed to the session key, and where
// its key.released entry sits in the ledger.
type ReleaseResponse struct {
	Share     int    `json:"share"`
	Threshold int    `json:"threshold"`
	Envelope  []byte `json:"envelope"`
	Entry     uint64 `json:"entry"`
	Height    int64  `json:"height"`
}

func field(h interface{ Write([]byte) (int, error) }, b []byte) {
	h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b))))
	h.Write(b)
}

// InfoReportData is what a broker's evidence binds: its signing key, its
// sealing key's text form and the asker's nonce.
func InfoReportData(signing ed25519.PublicKey, sealing string, nonce []byte) [attest.ReportDataSize]byte {
	h := sha512.New()
	h.Write([]byte(InfoLabel))
	field(h, signing)
	field(h, []byte(sealing))
	field(h, nonce)
	var out [attest.ReportDataSize]byte
	copy(out[:], h.Sum(nil))
	return out
}

// ReleaseReportData is what an isolate's evidence for a release binds:
// the policy hash, node, session, the session's HPKE key (text form), the
// artifact, the grant and the broker's nonce. The broker seals the share
// to exactly that HPKE key.
func ReleaseReportData(r *ReleaseRequest) [attest.ReportDataSize]byte {
	h := sha512.New()
	h.Write([]byte(ReleaseLabel))
	for _, f := range []string{r.PolicyHash, r.Node, r.Session, r.SessionKey, r.Owner, r.Artifact} {
		field(h, []byte(f))
	}
	h.Write(binary.BigEndian.AppendUint64(nil, r.Grant))
	field(h, r.Nonce)
	var out [attest.ReportDataSize]byte
	copy(out[:], h.Sum(nil))
	return out
}

// RegistrationMessage is what an owner signs to register a share.
func RegistrationMessage(r *Registration, broker ed25519.PublicKey) []byte {
	h := sha256.New()
	h.Write([]byte(RegisterLabel))
	field(h, broker)
	for _, f := range []string{r.Owner, r.Artifact, r.Time} {
		field(h, []byte(f))
	}
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(r.Share)))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(r.Threshold)))
	field(h, r.Envelope)
	return h.Sum(nil)
}

func shareInfo(prefix, owner, artifact, session string, share int) []byte {
	b := []byte(prefix)
	for _, f := range []string{owner, artifact, session} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return binary.BigEndian.AppendUint32(b, uint32(share))
}

// ShareInfoForSession is the HPKE info of a share a broker seals to a
// session (for callers that open releases themselves).
func ShareInfoForSession(owner, artifact, session string, share int) []byte {
	return shareInfo(ShareToSession, owner, artifact, session, share)
}
