package ear

import (
	"encoding/asn1"
	"fmt"
	"math/big"
)

// parseDERSignature reads an ASN.1 ECDSA-Sig-Value, the form
// crypto.Signer returns for ECDSA keys.
func parseDERSignature(der []byte) (*big.Int, *big.Int, error) {
	var sig struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &sig)
	if err != nil || len(rest) != 0 || sig.R == nil || sig.S == nil || sig.R.Sign() <= 0 || sig.S.Sign() <= 0 {
		return nil, nil, fmt.Errorf("malformed ECDSA signature")
	}
	return sig.R, sig.S, nil
}
