package protocol

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"strings"
	"testing"
)

// The report data is the documented construction, byte for byte.
func TestReportDataConstruction(t *testing.T) {
	t.Parallel()
	var ph [32]byte
	copy(ph[:], bytes.Repeat([]byte{1}, 32))
	spki, hk, nonce := []byte("spki"), []byte("hpke"), bytes.Repeat([]byte{7}, NonceSize)
	h := sha512.New()
	h.Write([]byte("cloister/v1/session-attest\x00"))
	h.Write(ph[:])
	s := sha256.Sum256(spki)
	h.Write(s[:])
	k := sha256.Sum256(hk)
	h.Write(k[:])
	n := sha256.Sum256(nonce)
	h.Write(n[:])
	got := ReportData(ph, spki, hk, nonce)
	if !bytes.Equal(got[:], h.Sum(nil)) {
		t.Fatalf("ReportData = %x, want %x", got, h.Sum(nil))
	}
	// Each component changes the result.
	var ph2 [32]byte
	for name, other := range map[string][64]byte{
		"policy": ReportData(ph2, spki, hk, nonce),
		"spki":   ReportData(ph, []byte("spkj"), hk, nonce),
		"hpke":   ReportData(ph, spki, []byte("hpkf"), nonce),
		"nonce":  ReportData(ph, spki, hk, bytes.Repeat([]byte{8}, NonceSize)),
	} {
		if other == got {
			t.Errorf("changing the %s does not change the report data", name)
		}
	}
}

// Moving bytes between length-prefixed fields changes the signed message.
func TestRequestMessageUnambiguous(t *testing.T) {
	t.Parallel()
	var z [32]byte
	a := RequestMessage("s", "upload-input", "ab", z, z, 1, []byte("n"))
	b := RequestMessage("s", "upload-inputa", "b", z, z, 1, []byte("n"))
	c := RequestMessage("s", "upload-input", "ab", z, z, 2, []byte("n"))
	if bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatal("request messages collide")
	}
	if !strings.HasPrefix(string(a), RequestLabel) {
		t.Fatal("request message lacks its label")
	}
}

func TestSealInfoAndSeed(t *testing.T) {
	t.Parallel()
	if bytes.Equal(SealInfo(KindInput, "s", "a", ""), SealInfo(KindProgram, "s", "a", "")) {
		t.Fatal("input and program envelopes share info")
	}
	if bytes.Equal(SealInfo(KindOutput, "s", "o", "dave"), SealInfo(KindOutput, "s", "o", "carol")) {
		t.Fatal("outputs for different readers share info")
	}
	var ph [32]byte
	if Seed(ph, "a") == Seed(ph, "b") {
		t.Fatal("seed ignores the session")
	}
}

func TestServerNames(t *testing.T) {
	t.Parallel()
	id := hex.EncodeToString(bytes.Repeat([]byte{0xab}, SessionIDSize))
	if got := SessionFromServerName(ServerName(id)); got != id {
		t.Fatalf("round trip: %q", got)
	}
	for _, bad := range []string{"", "node.cloister", "x.session.cloister", id + ".session.cloister.evil", strings.ToUpper(id)[:31] + "g.session.cloister"} {
		if got := SessionFromServerName(bad); got != "" {
			t.Errorf("SessionFromServerName(%q) = %q, want none", bad, got)
		}
	}
	if ValidSessionID(strings.ToUpper(id)) == nil {
		t.Error("upper-case id accepted")
	}
}

func FuzzSessionFromServerName(f *testing.F) {
	f.Add(ServerName(strings.Repeat("0", 32)))
	f.Add("node.cloister")
	f.Add(strings.Repeat("a", 32) + ".SESSION.cloister")
	f.Add("")
	f.Fuzz(func(t *testing.T, name string) {
		id := SessionFromServerName(name)
		if id == "" {
			return
		}
		if ValidSessionID(id) != nil {
			t.Fatalf("%q gave invalid id %q", name, id)
		}
		if !strings.EqualFold(ServerName(id), name) {
			t.Fatalf("%q gave id %q whose server name is %q", name, id, ServerName(id))
		}
	})
}
