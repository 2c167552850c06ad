package software

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
)

func testKey(t testing.TB, seed byte) ed25519.PrivateKey {
	t.Helper()
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func rd(b byte) (r [attest.ReportDataSize]byte) {
	for i := range r {
		r[i] = b + byte(i)
	}
	return r
}

var fixedTime = time.Date(2026, 11, 22, 9, 0, 0, 123, time.UTC)

func newTestAttester(t testing.TB) *Attester {
	t.Helper()
	a, err := NewAttester(testKey(t, 7), WithMeasurement(sha256.Sum256([]byte("runtime"))), WithClock(func() time.Time { return fixedTime }))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	a := newTestAttester(t)
	ev, err := a.Attest(context.Background(), rd(1))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Class != attest.ClassSoftware {
		t.Fatalf("class %q", ev.Class)
	}
	c, err := attest.Verify(context.Background(), ev, attest.VerifyOptions{Now: fixedTime, TrustedKeys: []crypto.PublicKey{a.PublicKey()}})
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256([]byte("runtime"))
	r := rd(1)
	if !bytes.Equal(c.Measurement, want[:]) || !bytes.Equal(c.ReportData, r[:]) {
		t.Fatalf("claims measurement %x report data %x", c.Measurement, c.ReportData)
	}
	if c.HardwareProtected || len(c.Warnings) != 1 || c.Warnings[0] != NoHardwareWarning {
		t.Fatalf("claims must say no hardware protection: %+v", c)
	}
	if !c.IssuedAt.Equal(fixedTime) || c.Signer != protocol.FormatEd25519Key(a.PublicKey()) {
		t.Fatalf("issued %v signer %s", c.IssuedAt, c.Signer)
	}
	if err := attest.Validate(c, attest.ReferenceValues{ReportData: r[:], Measurements: [][]byte{want[:]}}, fixedTime); err != nil {
		t.Fatal(err)
	}
	if err := attest.Validate(c, attest.ReferenceValues{RequireHardware: true}, fixedTime); !errors.Is(err, attest.ErrTCB) {
		t.Fatalf("RequireHardware: %v", err)
	}
}

func TestRuntimeMeasurementIsExecutableHash(t *testing.T) {
	t.Parallel()
	a, err := NewAttester(testKey(t, 1))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Skip("no /proc/self/exe on this system")
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	if m := a.Measurement(); !bytes.Equal(m[:], h.Sum(nil)) {
		t.Fatalf("measurement %x is not the executable's hash %x", m, h.Sum(nil))
	}
}

func TestAttacks(t *testing.T) {
	t.Parallel()
	a := newTestAttester(t)
	ev, err := a.Attest(context.Background(), rd(1))
	if err != nil {
		t.Fatal(err)
	}
	opts := attest.VerifyOptions{Now: fixedTime, TrustedKeys: []crypto.PublicKey{a.PublicKey()}}
	var env Envelope
	if err := json.Unmarshal(ev.Data, &env); err != nil {
		t.Fatal(err)
	}
	reenc := func(e Envelope) *attest.Evidence {
		b, _ := json.Marshal(e)
		return &attest.Evidence{Class: attest.ClassSoftware, Data: b}
	}
	other := testKey(t, 9)
	cases := []struct {
		name string
		ev   *attest.Evidence
		opts attest.VerifyOptions
		want error
	}{
		{"no pinned key", ev, attest.VerifyOptions{Now: fixedTime}, attest.ErrUntrustedSigner},
		{"other pinned key", ev, attest.VerifyOptions{Now: fixedTime, TrustedKeys: []crypto.PublicKey{other.Public()}}, attest.ErrUntrustedSigner},
		{"flipped report data", func() *attest.Evidence {
			e := env
			e.Statement = bytes.Replace(env.Statement, []byte(`"report_data":"01`), []byte(`"report_data":"02`), 1)
			return reenc(e)
		}(), opts, attest.ErrSignature},
		{"flipped signature", func() *attest.Evidence {
			e := env
			e.Signature = append([]byte(nil), env.Signature...)
			e.Signature[5] ^= 1
			return reenc(e)
		}(), opts, attest.ErrSignature},
		{"signature without domain prefix", func() *attest.Evidence {
			e := env
			e.Signature = ed25519.Sign(testKey(t, 7), env.Statement)
			return reenc(e)
		}(), opts, attest.ErrSignature},
		{"key swapped in statement", func() *attest.Evidence {
			// An attacker re-signs with their own key and names it: only pinning stops it.
			st := bytes.Replace(env.Statement, []byte(protocol.FormatEd25519Key(a.PublicKey())), []byte(protocol.FormatEd25519Key(other.Public().(ed25519.PublicKey))), 1)
			return reenc(Envelope{Format: Format, Statement: st, Signature: ed25519.Sign(other, signedMessage(st))})
		}(), opts, attest.ErrUntrustedSigner},
		{"future dated", ev, attest.VerifyOptions{Now: fixedTime.Add(-time.Hour), TrustedKeys: opts.TrustedKeys}, attest.ErrExpired},
		{"unknown field", reenc(env), opts, nil},
		{"trailing data", &attest.Evidence{Class: attest.ClassSoftware, Data: append(append([]byte(nil), ev.Data...), []byte(" {}")...)}, opts, attest.ErrMalformed},
		{"wrong format", func() *attest.Evidence {
			e := env
			e.Format = "cloister-software-evidence/v2"
			return reenc(e)
		}(), opts, attest.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Verifier{}.Verify(context.Background(), tc.ev, tc.opts)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("re-encoded identical envelope must verify: %v", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	// Unknown members in the statement change the signed bytes and are refused before that.
	bad := strings.Replace(string(ev.Data), `"format"`, `"extra":1,"format"`, 1)
	if _, err := (Verifier{}).Verify(context.Background(), &attest.Evidence{Data: []byte(bad)}, opts); !errors.Is(err, attest.ErrMalformed) {
		t.Fatalf("unknown envelope member: %v", err)
	}
}

func TestPlatformKeyMatches(t *testing.T) {
	t.Parallel()
	pub := testKey(t, 3).Public().(ed25519.PublicKey)
	s := protocol.FormatEd25519Key(pub)
	if !PlatformKeyMatches(s, pub) || PlatformKeyMatches(s, testKey(t, 4).Public().(ed25519.PublicKey)) {
		t.Fatal("PlatformKeyMatches")
	}
	// A second spelling of the same key (a line break the base64 decoder
	// would skip) names no key.
	if PlatformKeyMatches(s[:20]+"\n"+s[20:], pub) {
		t.Error("a key spelled with a line break matched")
	}
}

func FuzzParseEnvelope(f *testing.F) {
	a := newTestAttester(f)
	ev, err := a.Attest(context.Background(), rd(1))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ev.Data)
	f.Add([]byte(`{"format":"cloister-software-evidence/v1","statement":"e30=","signature":""}`))
	f.Add([]byte(`{}`))
	pub := a.PublicKey()
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Verifier{}.Verify(context.Background(), &attest.Evidence{Data: data}, attest.VerifyOptions{Now: fixedTime, TrustedKeys: []crypto.PublicKey{pub}})
		if err == nil && (len(c.ReportData) != 64 || len(c.Measurement) != 32) {
			t.Fatalf("verified claims with wrong sizes: %+v", c)
		}
	})
}
