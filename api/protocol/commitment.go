package protocol

import (
	"encoding/json"

	"github.com/cloisterhq/cloister/jcs"
)

// ResultCommitmentDomain prefixes the message a session key signs when its
// node commits a run's result to the ledger, so that the signature can
// never be taken for one over anything else the session key signs (TLS
// handshakes sign with their own context strings).
const ResultCommitmentDomain = "cloister/result-commitment/v1\n"

// ResultCommitmentMessage is the exact byte string a session key signs to
// commit a run's result: ResultCommitmentDomain followed by the RFC 8785
// canonical JSON of {"outputs":…,"policy_hash":…,"session":…}, where
// outputs maps output name → reader id → hex SHA-256 of the envelope sealed
// to that reader. The node signs it (package node) and every principal
// checks it (client.ResultCommitment.Verify).
func ResultCommitmentMessage(session, policyHash string, outputs map[string]map[string]string) ([]byte, error) {
	if outputs == nil {
		outputs = map[string]map[string]string{}
	}
	raw, err := json.Marshal(map[string]any{"session": session, "policy_hash": policyHash, "outputs": outputs})
	if err != nil {
		return nil, err
	}
	canon, err := jcs.Canonicalize(raw)
	if err != nil {
		return nil, err
	}
	return append([]byte(ResultCommitmentDomain), canon...), nil
}
