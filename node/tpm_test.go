package node_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"log/slog"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/tpm"
	"github.com/cloisterhq/cloister/attest/tpm/swtpm"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/node"
)

// TestTPMClassEndToEnd runs a session whose isolate class is tpm, quoted
// by a private swtpm: the policy pins the attestation key and the PCR
// digest, and a policy pinning another digest is refused.
func TestTPMClassEndToEnd(t *testing.T) {
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed (Debian package swtpm; scripts/test installs it)")
	}
	sw, err := swtpm.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sw.Stop)
	rwc, err := tpm.Open(sw.Spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rwc.Close() })
	a, err := tpm.NewAttester(rwc, tpm.WithMeasurement(sha256.Sum256([]byte("cloister node under test"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	akPEM, err := a.PublicKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	// The PCR digest a relying party would have measured beforehand.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ev, err := a.Attest(ctx, [attest.ReportDataSize]byte{})
	if err != nil {
		t.Fatal(err)
	}
	ta, err := attest.ParseTrustAnchors("ak", akPEM)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := attest.Verify(ctx, ev, attest.VerifyOptions{TrustedKeys: ta.Keys})
	if err != nil {
		t.Fatal(err)
	}
	digest := hex.EncodeToString(claims.Measurement)

	n, err := node.New(ctx, node.Options{DataDir: filepath.Join(t.TempDir(), "node"), Attester: a, Runner: runtime, NoSync: true,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	if n.Class() != attest.ClassTPM {
		t.Fatalf("node class %s", n.Class())
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go n.Serve(ln)
	s := newScenario(t)
	wasm := readTestdata(t, "sum.wasm")
	policyFor := func(measurement string) []byte {
		return s.policyDoc(t, "", func(m map[string]any) {
			m["name"] = "sum-tpm"
			m["programs"] = []any{map[string]any{"name": "sum.wasm", "sha256": sha256hex(wasm), "provider": "alice"}}
			m["inputs"] = []any{map[string]any{"name": "a", "provider": "bob"}, map[string]any{"name": "b", "provider": "carol"}}
			m["outputs"] = []any{map[string]any{"name": "sum", "readers": []string{"dave"}}}
			m["isolates"] = []any{map[string]any{"class": "tpm", "platform_keys": []string{string(akPEM)}, "measurements": []string{measurement}}}
		})
	}
	doc := policyFor(digest)
	c, err := client.Dial(ctx, "https://"+ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		t.Fatal(err)
	}
	// A session whose policy expects another PCR digest (another runtime
	// or boot chain) does not attest.
	wrongDoc := policyFor(hex.EncodeToString(make([]byte, len(claims.Measurement))))
	wrongID, err := c.CreateSession(ctx, wrongDoc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Attest(ctx, wrongID, mustParse(t, wrongDoc)); !errors.Is(err, client.ErrAttestation) || !errors.Is(err, attest.ErrMeasurement) {
		t.Fatalf("attest with another expected digest: %v, want ErrAttestation wrapping attest.ErrMeasurement", err)
	}
	as, err := c.Attest(ctx, id, mustParse(t, doc))
	if err != nil {
		t.Fatal(err)
	}
	defer as.CloseIdleConnections()
	if cl := as.Claims(); cl.Class != attest.ClassTPM || hex.EncodeToString(cl.Measurement) != digest {
		t.Fatalf("claims class %s measurement %x", cl.Class, cl.Measurement)
	}
	s.provisionSum(t, as, "sum.wasm", wasm)
	got, err := as.Result(ctx, s.dave.key, "sum")
	if err != nil {
		t.Fatal(err)
	}
	if want := byteSum("hello", "world"); string(got) != want {
		t.Fatalf("sum = %q, want %q", got, want)
	}
}
