package ledger

import (
	"crypto/ed25519"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"

	"github.com/cloisterhq/cloister/api/protocol"
)

// The ledger checks every entry's signature once, in CheckTx or in
// FinalizeBlock; that check is most of an entry's CPU cost. curve25519-voi
// (already linked by CometBFT) verifies about 40% faster than
// crypto/ed25519, and with VerifyOptionsStdLib it accepts exactly the
// signatures crypto/ed25519 accepts, so clients verifying with the
// standard library agree with the ledger (FuzzVerifyMatchesStdlib checks
// it).
var voiStdlib = &voi.Options{Verify: voi.VerifyOptionsStdLib}

func verifyEd25519(pub ed25519.PublicKey, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return voi.VerifyWithOptions(voi.PublicKey(pub), msg, sig, voiStdlib)
}

// verifyEntry is VerifySignature with the faster verifier.
func verifyEntry(se *SignedEntry) error {
	pub, err := protocol.ParseEd25519Key(se.Entry.Submitter)
	if err != nil {
		return err
	}
	if !verifyEd25519(pub, se.Entry.SigningMessage(), se.Signature) {
		return ErrBadSignature
	}
	return nil
}
