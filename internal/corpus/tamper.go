package corpus

import (
	"bytes"
	"encoding/pem"
	"testing"
)

// TamperPCK returns a copy of a DCAP quote (SGX or TDX) with one byte
// flipped in the signature of the PCK leaf certificate it carries, every
// length kept the same, so that only the certificate's check can fail.
func TamperPCK(t testing.TB, quote []byte) []byte {
	t.Helper()
	start := bytes.Index(quote, []byte("-----BEGIN CERTIFICATE-----"))
	end := bytes.Index(quote, []byte("-----END CERTIFICATE-----")) + len("-----END CERTIFICATE-----\n")
	if start < 0 || end < start {
		t.Fatal("no PEM certificate in the quote")
	}
	blk, _ := pem.Decode(quote[start:end])
	if blk == nil {
		t.Fatal("no PEM in quote")
	}
	blk.Bytes[len(blk.Bytes)-3] ^= 1
	re := pem.EncodeToMemory(blk)
	if len(re) != end-start {
		t.Fatalf("re-encoded PCK PEM is %d bytes, was %d", len(re), end-start)
	}
	out := bytes.Clone(quote)
	copy(out[start:], re)
	return out
}
