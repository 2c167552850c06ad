package tpm

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/legacy/tpm2/credactivation"
	"github.com/google/go-tpm/tpmutil"

	"github.com/cloisterhq/cloister/attest"
)

// AK enrolment by credential activation (TPM 2.0 Part 1, §24): an
// enrolment CA that trusts the TPM manufacturer's EK certificates encrypts
// a secret to the EK, bound to the AK's name; only the TPM that holds both
// that EK and that AK can recover it. The CA then issues an AK certificate,
// which verifiers trust through attest.VerifyOptions.Roots.
//
//	node:  EKCertificate(), AK public area   ──▶ CA: NewEnrollmentChallenge
//	node:  ActivateCredential(blob, secret)  ◀── CA: Challenge.CredBlob/EncSecret
//	node:  response                          ──▶ CA: Challenge.IssueAKCertificate

// EKCertNVIndexRSA is the NV index of the RSA-2048 EK certificate (TCG EK
// Credential Profile).
const EKCertNVIndexRSA = 0x01c00002

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// EKTemplateRSA is the TCG default RSA-2048 EK template (EK Credential
// Profile 2.0, §2.1.5.1): the key whose certificate sits at
// EKCertNVIndexRSA.
func EKTemplateRSA() tpm2.Public {
	buf, err := tpmutil.Pack(tpm2.CmdPolicySecret, tpm2.HandleEndorsement)
	if err != nil {
		panic(err)
	}
	d1 := sha256.Sum256(append(make([]byte, 32), buf...))
	d2 := sha256.Sum256(d1[:])
	return tpm2.Public{
		Type:       tpm2.AlgRSA,
		NameAlg:    tpm2.AlgSHA256,
		Attributes: (tpm2.FlagStorageDefault | tpm2.FlagAdminWithPolicy) &^ tpm2.FlagUserWithAuth,
		AuthPolicy: d2[:],
		RSAParameters: &tpm2.RSAParams{
			Symmetric:  &tpm2.SymScheme{Alg: tpm2.AlgAES, KeyBits: 128, Mode: tpm2.AlgCFB},
			KeyBits:    2048,
			ModulusRaw: make([]byte, 256),
		},
	}
}

// EKCertificate reads the RSA EK certificate (DER) from the TPM's NV
// storage, where manufacturers (and swtpm_setup --create-ek-cert) put it.
func (a *Attester) EKCertificate() ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	der, err := tpm2.NVReadEx(a.rw, tpmutil.Handle(EKCertNVIndexRSA), tpm2.HandleOwner, "", 0)
	if err != nil {
		return nil, fmt.Errorf("tpm attester: reading the EK certificate (NV %#x): %w", EKCertNVIndexRSA, err)
	}
	return der, nil
}

// AKPublic returns the AK's public area (TPMT_PUBLIC), as the enrolment
// CA needs it.
func (a *Attester) AKPublic() []byte { return append([]byte(nil), a.akPublic...) }

// ActivateCredential recovers the enrolment CA's secret with the EK and
// the AK. It fails unless this TPM holds the EK the challenge was made for
// and the AK it names.
func (a *Attester) ActivateCredential(credBlob, encSecret []byte) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.open {
		return nil, errors.New("tpm attester: closed")
	}
	ek, _, err := tpm2.CreatePrimary(a.rw, tpm2.HandleEndorsement, tpm2.PCRSelection{}, "", "", EKTemplateRSA())
	if err != nil {
		return nil, fmt.Errorf("tpm attester: creating the EK: %w", err)
	}
	defer tpm2.FlushContext(a.rw, ek)
	sess, _, err := tpm2.StartAuthSession(a.rw, tpm2.HandleNull, tpm2.HandleNull, make([]byte, 32), nil, tpm2.SessionPolicy, tpm2.AlgNull, tpm2.AlgSHA256)
	if err != nil {
		return nil, fmt.Errorf("tpm attester: starting the EK policy session: %w", err)
	}
	defer tpm2.FlushContext(a.rw, sess)
	pw := tpm2.AuthCommand{Session: tpm2.HandlePasswordSession, Attributes: tpm2.AttrContinueSession}
	if _, _, err := tpm2.PolicySecret(a.rw, tpm2.HandleEndorsement, pw, sess, nil, nil, nil, 0); err != nil {
		return nil, fmt.Errorf("tpm attester: EK policy: %w", err)
	}
	auths := []tpm2.AuthCommand{pw, {Session: sess, Attributes: tpm2.AttrContinueSession}}
	// The challenge holds TPM2B structures (size-prefixed); the command
	// adds the size itself.
	blob, err := unTPM2B(credBlob)
	if err != nil {
		return nil, fmt.Errorf("tpm attester: credential blob: %w", err)
	}
	enc, err := unTPM2B(encSecret)
	if err != nil {
		return nil, fmt.Errorf("tpm attester: encrypted secret: %w", err)
	}
	secret, err := tpm2.ActivateCredentialUsingAuth(a.rw, auths, a.ak, ek, blob, enc)
	if err != nil {
		return nil, fmt.Errorf("tpm attester: activating the credential: %w", err)
	}
	return secret, nil
}

func unTPM2B(b []byte) ([]byte, error) {
	if len(b) < 2 || int(b[0])<<8|int(b[1]) != len(b)-2 {
		return nil, fmt.Errorf("%w: not a TPM2B structure of its stated size", attest.ErrMalformed)
	}
	return b[2:], nil
}

// Challenge is an enrolment CA's pending challenge for one AK.
type Challenge struct {
	CredBlob  []byte // TPM2B_ID_OBJECT (size-prefixed), for ActivateCredential
	EncSecret []byte // TPM2B_ENCRYPTED_SECRET (size-prefixed), for ActivateCredential
	secret    []byte
	ak        *AK
	ekCert    *x509.Certificate
}

// NewEnrollmentChallenge checks that ekCertDER chains to ekRoots (through
// intermediates) at now and is an RSA key, that akPublic is a restricted
// attestation key, and makes a credential-activation challenge bound to
// both.
func NewEnrollmentChallenge(ekCertDER []byte, ekRoots, intermediates []*x509.Certificate, akPublic []byte, now time.Time) (*Challenge, error) {
	ekCert, err := x509.ParseCertificate(ekCertDER)
	if err != nil {
		return nil, fmt.Errorf("%w: EK certificate: %v", attest.ErrMalformed, err)
	}
	// EK certificates carry the TPM's manufacturer, model and version as a
	// critical subjectAltName directoryName that crypto/x509 does not
	// interpret; it is informative, so it must not fail the chain.
	unhandled := ekCert.UnhandledCriticalExtensions[:0]
	for _, oid := range ekCert.UnhandledCriticalExtensions {
		if !oid.Equal(oidSubjectAltName) {
			unhandled = append(unhandled, oid)
		}
	}
	ekCert.UnhandledCriticalExtensions = unhandled
	roots, inter := x509.NewCertPool(), x509.NewCertPool()
	for _, r := range ekRoots {
		roots.AddCert(r)
	}
	for _, c := range intermediates {
		inter.AddCert(c)
	}
	if _, err := ekCert.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("%w: EK certificate %q does not chain to a trusted TPM manufacturer root: %v", attest.ErrChain, ekCert.Subject.String(), err)
	}
	ekPub, ok := ekCert.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: EK certificate key is %T, only RSA EKs are supported", attest.ErrMalformed, ekCert.PublicKey)
	}
	ak, err := ParseAK(akPublic)
	if err != nil {
		return nil, err
	}
	nameDigest := sha256.Sum256(akPublic)
	if ak.Public.NameAlg != tpm2.AlgSHA256 {
		return nil, fmt.Errorf("%w: AK name algorithm must be SHA-256", attest.ErrMalformed)
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	blob, enc, err := credactivation.Generate(&tpm2.HashValue{Alg: tpm2.AlgSHA256, Value: nameDigest[:]}, ekPub, 16, secret)
	if err != nil {
		return nil, fmt.Errorf("making the credential challenge: %w", err)
	}
	return &Challenge{CredBlob: blob, EncSecret: enc, secret: secret, ak: ak, ekCert: ekCert}, nil
}

// IssueAKCertificate checks the TPM's response and, if it is the secret,
// issues a DER X.509 certificate for the AK signed by ca/caKey, valid for
// validity from now. A wrong response fails with attest.ErrUntrustedSigner.
func (c *Challenge) IssueAKCertificate(response []byte, ca *x509.Certificate, caKey crypto.Signer, subject string, now time.Time, validity time.Duration) ([]byte, error) {
	if subtle.ConstantTimeCompare(response, c.secret) != 1 {
		return nil, fmt.Errorf("%w: the credential was not activated: this AK is not on the TPM of EK %q", attest.ErrUntrustedSigner, c.ekCert.Subject.String())
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: subject},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca, c.ak.Key, caKey)
}
