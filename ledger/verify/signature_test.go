package verify

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"
)

// signatureVector is one case of testdata/signatures.json.
type signatureVector struct {
	Name      string `json:"name"`
	PublicKey string `json:"public_key"`
	Message   string `json:"message"`
	Signature string `json:"signature"`
	Valid     bool   `json:"valid"`
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// makeSignatureVectors: RFC 8032 section 7.1's first three tests, and the
// inputs on which Ed25519 verifiers are known to disagree (non-canonical
// s, small-order and non-canonical points), with the outcome of the
// signature rule — the standard library's cofactorless check.
func makeSignatureVectors(t *testing.T) []signatureVector {
	t.Helper()
	rfc := []struct{ name, seed, pub, msg, sig string }{
		{"RFC 8032 test 1 (empty message)", "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
			"d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
			"e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
		{"RFC 8032 test 2 (one byte)", "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
			"3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
			"92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
		{"RFC 8032 test 3 (two bytes)", "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
			"fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
			"6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"},
	}
	var out []signatureVector
	for _, r := range rfc {
		k := ed25519.NewKeyFromSeed(unhex(t, r.seed))
		if hex.EncodeToString(k.Public().(ed25519.PublicKey)) != r.pub || hex.EncodeToString(ed25519.Sign(k, unhex(t, r.msg))) != r.sig {
			t.Fatalf("%s: the standard library does not reproduce the RFC's key or signature", r.name)
		}
		out = append(out, signatureVector{Name: r.name, PublicKey: r.pub, Message: r.msg, Signature: r.sig})
	}
	t1 := out[0]
	sig := unhex(t, t1.Signature)
	// s + L: the same signature equation, a non-canonical s.
	const l = "edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010"
	sPlusL := addLE(sig[32:], unhex(t, l))
	out = append(out,
		signatureVector{Name: "test 1 with s + L (non-canonical s)", PublicKey: t1.PublicKey, Message: t1.Message,
			Signature: hex.EncodeToString(append(bytes.Clone(sig[:32]), sPlusL...))},
		signatureVector{Name: "test 1 over another message", PublicKey: t1.PublicKey, Message: "00", Signature: t1.Signature},
		signatureVector{Name: "test 1 with a flipped bit in R", PublicKey: t1.PublicKey, Message: t1.Message,
			Signature: hex.EncodeToString(append([]byte{sig[0] ^ 1}, sig[1:]...))},
	)
	identity := "0100000000000000000000000000000000000000000000000000000000000000"
	out = append(out,
		signatureVector{Name: "identity key, R identity, s = 0: verifies under the cofactorless equation for any message (the ledger refuses such submitter keys)",
			PublicKey: identity, Message: "6869", Signature: identity + hex.EncodeToString(make([]byte, 32))},
		signatureVector{Name: "non-canonical key encoding (y = p + 1)", PublicKey: "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
			Message: t1.Message, Signature: t1.Signature},
		signatureVector{Name: "a key that is not a point", PublicKey: "0200000000000000000000000000000000000000000000000000000000000000",
			Message: t1.Message, Signature: t1.Signature},
	)
	for i := range out {
		v := &out[i]
		v.Valid = Signature(unhex(t, v.PublicKey), unhex(t, v.Message), unhex(t, v.Signature))
	}
	return out
}

// addLE adds two little-endian 32-byte numbers, modulo 2^256.
func addLE(a, b []byte) []byte {
	out := make([]byte, 32)
	carry := 0
	for i := range 32 {
		s := int(a[i]) + int(b[i]) + carry
		out[i], carry = byte(s), s>>8
	}
	return out
}

// TestSignatureVectors: the signature rule on testdata/signatures.json,
// which a verifier in another language (WebCrypto's Ed25519, say) runs too
// before it is trusted to agree with the ledger.
func TestSignatureVectors(t *testing.T) {
	t.Parallel()
	got := makeSignatureVectors(t)
	want := map[string]bool{
		"RFC 8032 test 1 (empty message)": true, "RFC 8032 test 2 (one byte)": true, "RFC 8032 test 3 (two bytes)": true,
		"test 1 with s + L (non-canonical s)": false, "test 1 over another message": false, "test 1 with a flipped bit in R": false,
		"non-canonical key encoding (y = p + 1)": false, "a key that is not a point": false,
	}
	for _, v := range got {
		if w, ok := want[v.Name]; ok && v.Valid != w {
			t.Errorf("%s: valid = %v, want %v", v.Name, v.Valid, w)
		}
	}
	b, err := json.MarshalIndent(struct {
		Comment    string            `json:"comment"`
		Signatures []signatureVector `json:"signatures"`
	}{"Ed25519 as the ledger verifies it (crypto/ed25519: RFC 8032, cofactorless, s < L). Hex throughout.", got}, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	b = append(b, '\n')
	const path = "testdata/signatures.json"
	if *update {
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file, err := os.ReadFile(path)
	if err != nil || !bytes.Equal(file, b) {
		t.Fatalf("%s does not match the code (%v); rerun with -update and review the diff", path, err)
	}
}
