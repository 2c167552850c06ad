package tpm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/go-tpm/legacy/tpm2"

	"github.com/cloisterhq/cloister/attest"
)

// quotingKey signs TPMS_ATTEST structures the way a TPM's restricted
// ECDSA P-256 AK does. The verifier checks the AK's attributes and its
// signature, not who computed it, so a quote signed here stands for a
// genuine TPM's quote: it lets a test build the exact evidence an attack
// starts from without a TPM.
type quotingKey struct {
	priv   *ecdsa.PrivateKey
	public []byte // TPMT_PUBLIC
}

func newQuotingKey(t *testing.T) *quotingKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := AKTemplateECC()
	tmpl.ECCParameters.Point = tpm2.ECPoint{XRaw: priv.X.FillBytes(make([]byte, 32)), YRaw: priv.Y.FillBytes(make([]byte, 32))}
	pub, err := tmpl.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &quotingKey{priv: priv, public: pub}
}

// quote returns TPMS_ATTEST and TPMT_SIGNATURE for a quote over the given
// SHA-256 PCR values with qualifying data extra.
func (k *quotingKey) quote(t *testing.T, extra []byte, pcrs map[int][]byte) (quote, sig []byte) {
	t.Helper()
	var sel []int
	for i := range pcrs {
		sel = append(sel, i)
	}
	h := sha256.New()
	for i := 0; i < 24; i++ {
		if v, ok := pcrs[i]; ok {
			h.Write(v)
		}
	}
	ad := tpm2.AttestationData{
		Magic:             tpmGeneratedValue,
		Type:              tpm2.TagAttestQuote,
		ExtraData:         extra,
		AttestedQuoteInfo: &tpm2.QuoteInfo{PCRSelection: tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: sel}, PCRDigest: h.Sum(nil)},
	}
	quote, err := ad.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256(quote)
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig, err = tpm2.Signature{Alg: tpm2.AlgECDSA, ECC: &tpm2.SignatureECC{HashAlg: tpm2.AlgSHA256, R: r, S: s}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return quote, sig
}

// agileLog builds a crypto-agile TCG event log (SHA-1 and SHA-256 digests
// per event): the Spec ID event, then one EV_POST_CODE event per data item,
// all into PCR pcr.
func agileLog(pcr uint32, data ...[]byte) []byte {
	var b bytes.Buffer
	le := func(v any) { _ = binary.Write(&b, binary.LittleEndian, v) }
	// Spec ID event, in the TPM 1.2 (SHA-1) event format.
	var spec bytes.Buffer
	spec.WriteString("Spec ID Event03\x00")
	_ = binary.Write(&spec, binary.LittleEndian, struct {
		PlatformClass                   uint32
		Minor, Major, Errata, UintnSize uint8
		NumAlgs                         uint32
		SHA1ID, SHA1Size                uint16
		SHA256ID, SHA256Size            uint16
		VendorInfoSize                  uint8
	}{0, 0, 2, 0, 2, 2, 0x0004, 20, 0x000b, 32, 0})
	le(uint32(0))
	le(uint32(3)) // EV_NO_ACTION
	b.Write(make([]byte, 20))
	le(uint32(spec.Len()))
	b.Write(spec.Bytes())
	for _, d := range data {
		s1, s256 := sha1.Sum(d), sha256.Sum256(d)
		le(pcr)
		le(uint32(1)) // EV_POST_CODE
		le(uint32(2))
		le(uint16(0x0004))
		b.Write(s1[:])
		le(uint16(0x000b))
		b.Write(s256[:])
		le(uint32(len(d)))
		b.Write(d)
	}
	return b.Bytes()
}

// replayed returns the PCR value after extending digests from zero.
func replayed(h crypto.Hash, data ...[]byte) []byte {
	v := make([]byte, h.Size())
	for _, d := range data {
		dh := h.New()
		dh.Write(d)
		x := h.New()
		x.Write(v)
		x.Write(dh.Sum(nil))
		v = x.Sum(nil)
	}
	return v
}

type jsonPCR struct {
	Index     int
	Digest    []byte
	DigestAlg crypto.Hash
}

func goAttestationDoc(t *testing.T, k *quotingKey, nonce, quote, sig []byte, pcrs []jsonPCR, log []byte) []byte {
	t.Helper()
	var g goAttestationJSON
	g.Static.TPMVersion = 2
	g.AK.Public = k.public
	g.Quote.Nonce, g.Quote.Quote, g.Quote.Signature = nonce, quote, sig
	for _, p := range pcrs {
		g.Log.PCRs = append(g.Log.PCRs, struct {
			Index     int
			Digest    []byte
			DigestAlg crypto.Hash
		}(p))
	}
	g.Log.Raw = log
	out, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestEventLogReplaysOnlySignedBank: a genuine quote covers the SHA-256
// bank. An attacker swaps the event log for one describing other software
// and adds SHA-1 PCR values (which no quote signs) that the forged log
// replays to. The verifier must judge the log against the signed values
// only, and refuse it.
func TestEventLogReplaysOnlySignedBank(t *testing.T) {
	t.Parallel()
	k := newQuotingKey(t)
	ak, err := ParseAK(k.public)
	if err != nil {
		t.Fatal(err)
	}
	opts := attest.VerifyOptions{TrustedKeys: []crypto.PublicKey{ak.Key}}
	honest := [][]byte{[]byte("firmware 1.0"), []byte("boot loader 2.1")}
	forged := [][]byte{[]byte("firmware 1.0"), []byte("boot loader with a back door")}
	nonce := []byte("fresh nonce")
	signed := replayed(crypto.SHA256, honest...)
	quote, sig := k.quote(t, nonce, map[int][]byte{4: signed})
	verify := func(pcrs []jsonPCR, log []byte) (*attest.Claims, error) {
		return verifyTPM(goAttestationDoc(t, k, nonce, quote, sig, pcrs, log), opts)
	}

	c, err := verify([]jsonPCR{{4, signed, crypto.SHA256}}, agileLog(4, honest...))
	if err != nil {
		t.Fatalf("honest log: %v", err)
	}
	if c.Extra["event_log_events"] != 2 || !bytes.Equal(c.Nonce, nonce) || !bytes.Equal(c.Measurements["pcr4"], signed) {
		t.Fatalf("claims %+v", c)
	}

	if _, err := verify([]jsonPCR{{4, signed, crypto.SHA256}}, agileLog(4, forged...)); !errors.Is(err, attest.ErrMeasurement) {
		t.Fatalf("forged log: %v, want ErrMeasurement", err)
	}
	// The forged log with an unsigned SHA-1 bank that it replays to.
	unsigned := jsonPCR{4, replayed(crypto.SHA1, forged...), crypto.SHA1}
	if _, err := verify([]jsonPCR{{4, signed, crypto.SHA256}, unsigned}, agileLog(4, forged...)); !errors.Is(err, attest.ErrMeasurement) {
		t.Fatalf("forged log with an unsigned SHA-1 bank: %v, want ErrMeasurement", err)
	}
	// Unsigned values of another bank change nothing for an honest log.
	if _, err := verify([]jsonPCR{{4, signed, crypto.SHA256}, {4, make([]byte, 20), crypto.SHA1}}, agileLog(4, honest...)); err != nil {
		t.Fatalf("honest log with a junk SHA-1 bank: %v", err)
	}
	// A signed value that differs from the log: the quote fails first.
	if _, err := verify([]jsonPCR{{4, replayed(crypto.SHA256, forged...), crypto.SHA256}}, agileLog(4, forged...)); !errors.Is(err, attest.ErrSignature) {
		t.Fatalf("PCR value swapped for the forged one: %v, want ErrSignature", err)
	}
	// A replayed quote with another nonce claimed.
	if _, err := verifyTPM(goAttestationDoc(t, k, []byte("other nonce"), quote, sig, []jsonPCR{{4, signed, crypto.SHA256}}, nil), opts); !errors.Is(err, attest.ErrNonce) {
		t.Fatalf("nonce claimed differently from the quote: %v, want ErrNonce", err)
	}
}
