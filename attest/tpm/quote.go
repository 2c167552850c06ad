package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/cloisterhq/cloister/attest"
)

// tpmGeneratedValue is TPM_GENERATED_VALUE: every structure a TPM signs
// with a restricted key starts with it, so a restricted AK cannot be made
// to sign an attacker-chosen "quote".
const tpmGeneratedValue = 0xff544347

// requiredAKAttributes are those of an attestation key: it signs only
// TPM-generated data (restricted), never leaves the TPM (fixedTPM,
// fixedParent) and was generated inside it (sensitiveDataOrigin).
const requiredAKAttributes = tpm2.FlagSign | tpm2.FlagRestricted | tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin

// AK is a parsed attestation key public area.
type AK struct {
	Public    tpm2.Public
	Key       crypto.PublicKey
	Hash      crypto.Hash // the signing scheme's hash; also the PCR digest hash
	PublicRaw []byte      // TPMT_PUBLIC as given
}

// ParseAK decodes a TPMT_PUBLIC and checks it describes a restricted
// signing key that never left its TPM.
func ParseAK(raw []byte) (*AK, error) {
	if len(raw) == 0 || len(raw) > 2048 {
		return nil, fmt.Errorf("%w: TPM AK public area is %d bytes", attest.ErrMalformed, len(raw))
	}
	pub, err := tpm2.DecodePublic(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: TPM AK public area: %v", attest.ErrMalformed, err)
	}
	if pub.Attributes&requiredAKAttributes != requiredAKAttributes {
		return nil, fmt.Errorf("%w: TPM key attributes %#x lack restricted|sign|fixedTPM|fixedParent|sensitiveDataOrigin: not an attestation key", attest.ErrUntrustedSigner, uint32(pub.Attributes))
	}
	var h crypto.Hash
	switch {
	case pub.RSAParameters != nil && pub.RSAParameters.Sign != nil && pub.RSAParameters.Sign.Alg == tpm2.AlgRSASSA:
		h, err = pub.RSAParameters.Sign.Hash.Hash()
	case pub.ECCParameters != nil && pub.ECCParameters.Sign != nil && pub.ECCParameters.Sign.Alg == tpm2.AlgECDSA:
		h, err = pub.ECCParameters.Sign.Hash.Hash()
	default:
		return nil, fmt.Errorf("%w: TPM AK has no RSASSA or ECDSA signing scheme", attest.ErrMalformed)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: TPM AK signing hash: %v", attest.ErrMalformed, err)
	}
	if h != crypto.SHA1 && h != crypto.SHA256 && h != crypto.SHA384 && h != crypto.SHA512 {
		return nil, fmt.Errorf("%w: TPM AK signing hash %v is not SHA-1 or SHA-2", attest.ErrMalformed, h)
	}
	key, err := pub.Key()
	if err != nil {
		return nil, fmt.Errorf("%w: TPM AK key: %v", attest.ErrMalformed, err)
	}
	return &AK{Public: pub, Key: key, Hash: h, PublicRaw: append([]byte(nil), raw...)}, nil
}

// PublicKeyPEM returns the AK's key as a PEM "PUBLIC KEY", the form a
// verifier pins with --trust-root.
func (ak *AK) PublicKeyPEM() ([]byte, error) { return publicKeyPEM(ak.Key) }

// Trusted reports whether the AK is pinned in keys or certified by cert
// (an AK certificate) chaining to roots.
func (ak *AK) Trusted(keys []crypto.PublicKey, cert *x509.Certificate, roots *x509.CertPool, opts x509.VerifyOptions) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	for _, k := range keys {
		if e, ok := k.(equaler); ok && e.Equal(ak.Key) {
			return nil
		}
	}
	if cert != nil && roots != nil {
		if e, ok := cert.PublicKey.(equaler); !ok || !e.Equal(ak.Key) {
			return fmt.Errorf("%w: the AK certificate certifies another key", attest.ErrChain)
		}
		opts.Roots = roots
		opts.KeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageAny}
		if _, err := cert.Verify(opts); err != nil {
			var inv x509.CertificateInvalidError
			if errors.As(err, &inv) && inv.Reason == x509.Expired {
				return fmt.Errorf("%w: TPM AK certificate %q: %v", attest.ErrExpired, cert.Subject.CommonName, err)
			}
			return fmt.Errorf("%w: TPM AK certificate %q: %v", attest.ErrChain, cert.Subject.CommonName, err)
		}
		return nil
	}
	return fmt.Errorf("%w: TPM attestation key is neither pinned (%d keys given) nor certified by a trusted AK certificate", attest.ErrUntrustedSigner, len(keys))
}

// Quote is a verified TPMS_ATTEST of type quote.
type Quote struct {
	Attest    *tpm2.AttestationData
	Bank      tpm2.Algorithm
	Selection []int // PCR indexes, ascending
}

// VerifyQuote checks that sig (TPMT_SIGNATURE) is ak's signature over quote
// (TPMS_ATTEST), that it is a TPM-generated quote, and that pcrs (index →
// value in the quoted bank) are exactly the quoted PCRs and hash to its
// PCR digest. It does not judge the qualifying data: callers compare
// Quote.Attest.ExtraData with what they expect.
func VerifyQuote(ak *AK, quote, sig []byte, pcrs map[int][]byte) (*Quote, error) {
	if len(quote) == 0 || len(quote) > 4096 || len(sig) == 0 || len(sig) > 4096 {
		return nil, fmt.Errorf("%w: TPM quote of %d bytes, signature of %d bytes", attest.ErrMalformed, len(quote), len(sig))
	}
	s, err := tpm2.DecodeSignature(bytes.NewBuffer(sig))
	if err != nil {
		return nil, fmt.Errorf("%w: TPM quote signature: %v", attest.ErrMalformed, err)
	}
	h := ak.Hash.New()
	h.Write(quote)
	digest := h.Sum(nil)
	switch pub := ak.Key.(type) {
	case *rsa.PublicKey:
		if s.RSA == nil || s.Alg != tpm2.AlgRSASSA {
			return nil, fmt.Errorf("%w: TPM signature is not RSASSA for an RSA AK", attest.ErrSignature)
		}
		if sh, err := s.RSA.HashAlg.Hash(); err != nil || sh != ak.Hash {
			return nil, fmt.Errorf("%w: TPM signature hash differs from the AK's scheme", attest.ErrSignature)
		}
		if err := rsa.VerifyPKCS1v15(pub, ak.Hash, digest, s.RSA.Signature); err != nil {
			return nil, fmt.Errorf("%w: TPM quote signature does not verify with the AK: %v", attest.ErrSignature, err)
		}
	case *ecdsa.PublicKey:
		if s.ECC == nil || s.Alg != tpm2.AlgECDSA {
			return nil, fmt.Errorf("%w: TPM signature is not ECDSA for an ECC AK", attest.ErrSignature)
		}
		if sh, err := s.ECC.HashAlg.Hash(); err != nil || sh != ak.Hash {
			return nil, fmt.Errorf("%w: TPM signature hash differs from the AK's scheme", attest.ErrSignature)
		}
		if !ecdsa.Verify(pub, digest, s.ECC.R, s.ECC.S) {
			return nil, fmt.Errorf("%w: TPM quote signature does not verify with the AK", attest.ErrSignature)
		}
	default:
		return nil, fmt.Errorf("%w: TPM AK key type %T", attest.ErrMalformed, ak.Key)
	}

	ad, err := tpm2.DecodeAttestationData(quote)
	if err != nil {
		return nil, fmt.Errorf("%w: TPMS_ATTEST: %v", attest.ErrMalformed, err)
	}
	if ad.Magic != tpmGeneratedValue {
		return nil, fmt.Errorf("%w: TPMS_ATTEST magic %#x is not TPM_GENERATED_VALUE", attest.ErrSignature, ad.Magic)
	}
	if ad.Type != tpm2.TagAttestQuote || ad.AttestedQuoteInfo == nil {
		return nil, fmt.Errorf("%w: TPMS_ATTEST type %#x is not a quote", attest.ErrMalformed, uint16(ad.Type))
	}
	qi := ad.AttestedQuoteInfo
	sel := append([]int(nil), qi.PCRSelection.PCRs...)
	sort.Ints(sel)
	if len(sel) == 0 {
		return nil, fmt.Errorf("%w: TPM quote selects no PCRs", attest.ErrMalformed)
	}
	if len(pcrs) != len(sel) {
		return nil, fmt.Errorf("%w: %d PCR values given for a quote over %d PCRs %v", attest.ErrMalformed, len(pcrs), len(sel), sel)
	}
	bankHash, err := qi.PCRSelection.Hash.Hash()
	if err != nil {
		return nil, fmt.Errorf("%w: TPM quote PCR bank: %v", attest.ErrMalformed, err)
	}
	// The PCR digest is computed with the signing scheme's hash over the
	// concatenated PCR values in ascending index order (TPM 2.0 Part 3,
	// TPM2_Quote).
	ph := ak.Hash.New()
	for _, i := range sel {
		v, ok := pcrs[i]
		if !ok {
			return nil, fmt.Errorf("%w: TPM quote covers PCR %d, whose value is missing", attest.ErrMalformed, i)
		}
		if len(v) != bankHash.Size() {
			return nil, fmt.Errorf("%w: PCR %d value is %d bytes, the %v bank has %d", attest.ErrMalformed, i, len(v), bankHash, bankHash.Size())
		}
		ph.Write(v)
	}
	if !bytes.Equal(ph.Sum(nil), qi.PCRDigest) {
		return nil, fmt.Errorf("%w: the PCR values do not hash to the quote's signed PCR digest", attest.ErrSignature)
	}
	return &Quote{Attest: ad, Bank: qi.PCRSelection.Hash, Selection: sel}, nil
}

func publicKeyPEM(k crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return nil, err
	}
	return pemEncode("PUBLIC KEY", der), nil
}
