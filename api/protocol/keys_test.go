package protocol

import (
	"crypto/ed25519"
	"strings"
	"testing"
)

func TestEd25519KeyText(t *testing.T) {
	t.Parallel()
	pub := ed25519.NewKeyFromSeed(make([]byte, 32)).Public().(ed25519.PublicKey)
	s := FormatEd25519Key(pub)
	if want := "ed25519:O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik="; s != want {
		t.Fatalf("FormatEd25519Key = %s, want %s", s, want)
	}
	got, err := ParseEd25519Key(s)
	if err != nil || !got.Equal(pub) {
		t.Fatalf("ParseEd25519Key(%s) = %x, %v", s, got, err)
	}
	for _, bad := range []string{
		"", "ed25519:", "x25519:" + s[8:], "ED25519:" + s[8:], s[:len(s)-4], s + "AAAA", "ed25519:!!!!",
		strings.TrimSuffix(s, "="), // unpadded
		s[:20] + "\n" + s[20:],     // a line break the base64 decoder skips
		s[:20] + "\r\n" + s[20:],   // the same with CR
		s[:len(s)-2] + "j=",        // non-zero padding bits: another spelling of the same bytes
		strings.NewReplacer("+", "-", "/", "_").Replace(s[:8]) + "O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=" + " ",
	} {
		if k, err := ParseEd25519Key(bad); err == nil {
			t.Errorf("ParseEd25519Key(%q) = %x, want an error", bad, k)
		}
	}
}
