package nitro

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/internal/corpus"
)

// conformance returns the path of a file in testdata/conformance/attestation.
func conformance(t testing.TB, rel string) string {
	return corpus.Path(t, "attestation/"+rel)
}

func load(t testing.TB, rel string) []byte {
	t.Helper()
	raw, err := os.ReadFile(conformance(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	d, err := attest.DecodeInput(raw)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func at(t testing.TB, s string) time.Time {
	t.Helper()
	ts, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

func verify(t testing.TB, data []byte, opts attest.VerifyOptions) (*attest.Claims, error) {
	t.Helper()
	return attest.Verify(context.Background(), &attest.Evidence{Class: attest.ClassNitro, Data: data}, opts)
}

func TestNitriteDocument(t *testing.T) {
	data := load(t, "nitro/nitrite/nitro_attestation.b64")
	if c, err := attest.Detect(data); err != nil || c != attest.ClassNitro {
		t.Fatalf("detect: %v %v", c, err)
	}
	now := at(t, "2024-09-07T14:37:39.545Z")
	c, err := verify(t, data, attest.VerifyOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string][]byte{"user_data": c.ReportData, "nonce": c.Nonce, "public_key": c.PublicKey} {
		if len(v) == 0 || !bytes.Equal(v, bytes.Repeat([]byte{1}, len(v))) {
			t.Errorf("%s = %x, want 0x01 bytes", name, v)
		}
	}
	if got := hex.EncodeToString(c.Measurement); !strings.HasPrefix(got, "e72a46ca80a260fb") || len(c.Measurement) != 48 {
		t.Errorf("PCR0 %s", got)
	}
	if !bytes.Equal(c.Measurements["pcr0"], c.Measurement) || c.Debug || !c.HardwareProtected {
		t.Errorf("claims %+v", c)
	}
	if !c.IssuedAt.Equal(now) {
		t.Errorf("issued %v", c.IssuedAt)
	}
	// Leaf valid 14:37:36..17:37:39 that day.
	for _, ts := range []string{"2024-09-07T14:37:00Z", "2024-09-07T17:40:00Z", "2026-01-01T00:00:00Z"} {
		if _, err := verify(t, data, attest.VerifyOptions{Now: at(t, ts)}); !errors.Is(err, attest.ErrExpired) {
			t.Errorf("at %s: %v, want ErrExpired", ts, err)
		}
	}
	// Without the AWS root (replaced by an unrelated one) the chain fails.
	_, other := testCA(t)
	if _, err := verify(t, data, attest.VerifyOptions{Now: now, ReplaceRoots: true, Roots: []*x509.Certificate{other}}); !errors.Is(err, attest.ErrChain) {
		t.Errorf("replaced roots: %v", err)
	}
}

func TestNitriteDebugDocument(t *testing.T) {
	data := load(t, "nitro/nitrite/nitro_attestation_debug.b64")
	now := at(t, "2024-09-07T14:38:06.508Z")
	if _, err := verify(t, data, attest.VerifyOptions{Now: now}); !errors.Is(err, attest.ErrDebug) {
		t.Fatalf("debug doc without AllowDebug: %v", err)
	}
	c, err := verify(t, data, attest.VerifyOptions{Now: now, AllowDebug: true})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Debug || !bytes.Equal(c.Measurement, make([]byte, 48)) {
		t.Fatalf("debug claims %+v", c)
	}
	if err := attest.Validate(c, attest.ReferenceValues{}, now); !errors.Is(err, attest.ErrDebug) {
		t.Fatalf("Validate must refuse debug by default: %v", err)
	}
}

func TestNitriteSelfSigned(t *testing.T) {
	data := load(t, "nitro/nitrite/selfsigned_attestation.b64")
	_, err := verify(t, data, attest.VerifyOptions{Now: at(t, "2024-09-07T14:37:39Z")})
	if !errors.Is(err, attest.ErrChain) {
		t.Fatalf("self-signed document: %v, want ErrChain", err)
	}
}

func TestEvervaultDocuments(t *testing.T) {
	// The base64 document comes from a debug-mode enclave (PCR0 zero):
	// it verifies at its timestamp only when debug is allowed.
	b64 := load(t, "nitro/evervault/valid-attestation-doc-base64")
	now := at(t, "2023-09-18T15:03:30.86Z")
	if _, err := verify(t, b64, attest.VerifyOptions{Now: now}); !errors.Is(err, attest.ErrDebug) {
		t.Fatalf("evervault base64 doc without debug: %v", err)
	}
	if c, err := verify(t, b64, attest.VerifyOptions{Now: now, AllowDebug: true}); err != nil || !c.Debug {
		t.Fatalf("evervault base64 doc: %v", err)
	}

	raw := load(t, "nitro/evervault/valid-attestation-doc-bytes")
	c, err := verify(t, raw, attest.VerifyOptions{Now: at(t, "2022-10-13T08:58:02.136Z")})
	if err != nil {
		t.Fatal(err)
	}
	pcr0 := hex.EncodeToString(c.Measurement)
	if !strings.HasPrefix(pcr0, "f4d48b81") || !strings.HasSuffix(pcr0, "142d8b") || c.Debug {
		t.Fatalf("PCR0 %s debug %v", pcr0, c.Debug)
	}
	if got := hex.EncodeToString(c.Measurements["pcr8"]); !strings.HasPrefix(got, "8790eb3c") {
		t.Fatalf("PCR8 %s", got)
	}

	dbg := load(t, "nitro/evervault/debug-mode-attestation-doc-bytes")
	// Its leaf expired 2022-10-12T16:49:54Z: at any later time the chain is invalid.
	if _, err := verify(t, dbg, attest.VerifyOptions{}); !errors.Is(err, attest.ErrExpired) {
		t.Fatalf("evervault debug doc now: %v", err)
	}
	if _, err := verify(t, dbg, attest.VerifyOptions{Now: at(t, "2022-10-12T13:50:06Z")}); !errors.Is(err, attest.ErrDebug) {
		t.Fatalf("evervault debug doc at its time: %v", err)
	}
}

func TestTampered(t *testing.T) {
	data := load(t, "nitro/nitrite/nitro_attestation.b64")
	now := at(t, "2024-09-07T14:37:39.545Z")
	p, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	flipAt := func(i int) []byte {
		d := append([]byte(nil), data...)
		d[i] ^= 0x01
		return d
	}
	ud := bytes.Index(data, p.Doc.UserData)
	pcr := bytes.Index(data, p.Doc.PCRs[0])
	ca := bytes.Index(data, p.Doc.CABundle[1])
	leaf := bytes.Index(data, p.Doc.Certificate)
	if ud < 0 || pcr < 0 || ca < 0 || leaf < 0 {
		t.Fatal("fields not found in the encoding")
	}
	for name, d := range map[string][]byte{
		"user_data byte":     flipAt(ud + 3),
		"PCR0 byte":          flipAt(pcr + 10),
		"signature byte":     flipAt(len(data) - 5),
		"cabundle cert byte": flipAt(ca + len(p.Doc.CABundle[1]) - 10),
		"leaf cert byte":     flipAt(leaf + len(p.Doc.Certificate) - 10),
	} {
		_, err := verify(t, d, attest.VerifyOptions{Now: now})
		if !errors.Is(err, attest.ErrSignature) && !errors.Is(err, attest.ErrChain) && !errors.Is(err, attest.ErrMalformed) {
			t.Errorf("%s: %v, want a signature/chain failure", name, err)
		}
		if name != "leaf cert byte" && !errors.Is(err, attest.ErrSignature) {
			t.Errorf("%s: %v, want ErrSignature", name, err)
		}
	}
	if _, err := verify(t, append(append([]byte(nil), data...), 0), attest.VerifyOptions{Now: now}); !errors.Is(err, attest.ErrMalformed) {
		t.Errorf("trailing byte: %v", err)
	}
}

// testCA makes a P-384 root and returns its key and certificate.
func testCA(t testing.TB) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test nitro root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return key, c
}

// fakeNSM answers attestation requests like the NSM does, signing with a
// leaf under a test root instead of the AWS chain.
type fakeNSM struct {
	t        testing.TB
	rootKey  *ecdsa.PrivateKey
	root     *x509.Certificate
	pcr0     []byte
	requests int
}

func (f *fakeNSM) Send(req []byte) ([]byte, error) {
	f.requests++
	var r map[string]nsmAttestationRequest
	if err := cbor.Unmarshal(req, &r); err != nil {
		return cbor.Marshal("InvalidArgument")
	}
	a, ok := r["Attestation"]
	if !ok {
		return cbor.Marshal("InvalidOperation")
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "i-test-enc.nitro"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(3 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.root, &leafKey.PublicKey, f.rootKey)
	if err != nil {
		return nil, err
	}
	doc := Document{
		ModuleID: "i-test-enc", Timestamp: uint64(time.Now().UnixMilli()), Digest: "SHA384",
		PCRs:        map[uint][]byte{0: f.pcr0, 1: bytes.Repeat([]byte{1}, 48), 2: bytes.Repeat([]byte{2}, 48)},
		Certificate: der, CABundle: [][]byte{f.root.Raw},
		UserData: a.UserData, Nonce: a.Nonce, PublicKey: a.PublicKey,
	}
	payload, err := cbor.Marshal(doc)
	if err != nil {
		return nil, err
	}
	signer, err := cose.NewSigner(cose.AlgorithmES384, leafKey)
	if err != nil {
		return nil, err
	}
	msg := cose.UntaggedSign1Message{Headers: cose.Headers{Protected: cose.ProtectedHeader{cose.HeaderLabelAlgorithm: cose.AlgorithmES384}}, Payload: payload}
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		return nil, err
	}
	signed, err := msg.MarshalCBOR()
	if err != nil {
		return nil, err
	}
	return cbor.Marshal(map[string]map[string][]byte{"Attestation": {"document": signed}})
}

func (f *fakeNSM) Close() error { return nil }

func TestAttesterWithFakeNSM(t *testing.T) {
	key, root := testCA(t)
	dev := &fakeNSM{t: t, rootKey: key, root: root, pcr0: bytes.Repeat([]byte{0xaa}, 48)}
	a, err := NewAttester(dev, []byte("session key"))
	if err != nil {
		t.Fatal(err)
	}
	var rd [attest.ReportDataSize]byte
	copy(rd[:], "report data bound by the enclave")
	ev, err := a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	// The built-in AWS root does not vouch for the test CA.
	if _, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{}); !errors.Is(err, attest.ErrChain) {
		t.Fatalf("fake document against the AWS root: %v", err)
	}
	c, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Roots: []*x509.Certificate{root}, ReplaceRoots: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.ReportData, rd[:]) || string(c.PublicKey) != "session key" || !bytes.Equal(c.Measurement, dev.pcr0) || c.Debug {
		t.Fatalf("claims %+v", c)
	}
	if err := attest.Validate(c, attest.ReferenceValues{ReportData: rd[:], Measurements: [][]byte{dev.pcr0}}, time.Now()); err != nil {
		t.Fatal(err)
	}

	// A debug enclave (PCR0 zero) is produced but refused by default.
	dev.pcr0 = make([]byte, 48)
	ev, err = a.Attest(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Roots: []*x509.Certificate{root}}); !errors.Is(err, attest.ErrDebug) {
		t.Fatalf("debug: %v", err)
	}
	if _, err := NewAttester(dev, make([]byte, 1025)); err == nil {
		t.Fatal("oversized public key accepted")
	}
}

func TestOpenNSMOutsideEnclave(t *testing.T) {
	if _, err := os.Stat(DefaultNSMPath); err == nil {
		t.Skip("running inside a Nitro enclave")
	}
	if _, err := OpenNSM(DefaultNSMPath); err == nil || !strings.Contains(err.Error(), "Nitro enclave") {
		t.Fatalf("OpenNSM: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, rel := range []string{"nitro/nitrite/nitro_attestation.b64", "nitro/nitrite/selfsigned_attestation.b64", "nitro/evervault/valid-attestation-doc-bytes"} {
		f.Add(load(f, rel))
	}
	f.Add([]byte{0xd2, 0x84, 0x40, 0xa0, 0x40, 0x40})
	now := at(f, "2024-09-07T14:37:39.545Z")
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		_, _ = p.Verify(attest.VerifyOptions{Now: now, AllowDebug: true})
	})
}

// recordingNSM captures the request bytes and answers with an NSM error.
type recordingNSM struct{ req []byte }

func (r *recordingNSM) Send(req []byte) ([]byte, error) {
	r.req = append([]byte(nil), req...)
	return cbor.Marshal(map[string]string{"Error": "InvalidArgument"})
}
func (r *recordingNSM) Close() error { return nil }

// TestNSMRequestEncoding pins the request to the NSM driver's wire format
// (serde CBOR of Request::Attestation{user_data, nonce, public_key}):
// {"Attestation": {"user_data": h'..', "nonce": null, "public_key": h'..'}}.
func TestNSMRequestEncoding(t *testing.T) {
	dev := &recordingNSM{}
	a, err := NewAttester(dev, []byte{0xaa})
	if err != nil {
		t.Fatal(err)
	}
	var rd [attest.ReportDataSize]byte
	rd[0] = 0x42
	_, err = a.Attest(context.Background(), rd)
	if err == nil || !strings.Contains(err.Error(), "InvalidArgument") {
		t.Fatalf("NSM error not reported: %v", err)
	}
	want := []byte{0xa1, 0x6b}
	want = append(want, "Attestation"...)
	want = append(want, 0xa3, 0x69)
	want = append(want, "user_data"...)
	want = append(want, 0x58, 0x40)
	want = append(want, rd[:]...)
	want = append(want, 0x65)
	want = append(want, "nonce"...)
	want = append(want, 0xf6, 0x6a)
	want = append(want, "public_key"...)
	want = append(want, 0x41, 0xaa)
	if !bytes.Equal(dev.req, want) {
		t.Fatalf("request\n got %x\nwant %x", dev.req, want)
	}
}

// TestEvervaultTamperedAndOutOfWindow: the evervault document that
// verifies (valid-attestation-doc-bytes) with a flipped byte in its
// payload, its signature and its leaf certificate, and at times before
// and after its leaf's three-hour window.
func TestEvervaultTamperedAndOutOfWindow(t *testing.T) {
	data := load(t, "nitro/evervault/valid-attestation-doc-bytes")
	now := at(t, "2022-10-13T08:58:02.136Z")
	p, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	flipAt := func(i int) []byte {
		d := bytes.Clone(data)
		d[i] ^= 0x01
		return d
	}
	pcr := bytes.Index(data, p.Doc.PCRs[0])
	leaf := bytes.Index(data, p.Doc.Certificate)
	if pcr < 0 || leaf < 0 {
		t.Fatal("fields not found in the encoding")
	}
	for name, tc := range map[string]struct {
		d    []byte
		want error
	}{
		"PCR0 byte":      {flipAt(pcr + 5), attest.ErrSignature},
		"signature byte": {flipAt(len(data) - 7), attest.ErrSignature},
		"leaf cert byte": {flipAt(leaf + len(p.Doc.Certificate) - 10), attest.ErrSignature},
	} {
		// The leaf is inside the signed payload, so any change to it
		// breaks the document signature before the chain is looked at.
		if _, err := verify(t, tc.d, attest.VerifyOptions{Now: now}); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", name, err, tc.want)
		}
	}
	lo, hi := p.Leaf.NotBefore, p.Leaf.NotAfter
	for _, ts := range []time.Time{lo.Add(-time.Second), hi.Add(time.Second)} {
		if _, err := verify(t, data, attest.VerifyOptions{Now: ts}); !errors.Is(err, attest.ErrExpired) {
			t.Errorf("at %s (leaf valid %s..%s): %v, want ErrExpired", ts, lo, hi, err)
		}
	}
}
