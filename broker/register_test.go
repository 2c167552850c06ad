package broker

import (
	"context"
	"crypto/ed25519"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/sealed"
)

// TestRegistrationAuthenticatedBeforeStored: a registration not signed by
// its owner for this broker, or whose share does not open with this
// broker's key, stores nothing; a good one survives a restart.
func TestRegistrationAuthenticatedBeforeStored(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b, err := New(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(b.Handler())
	defer srv.Close()
	ctx := context.Background()
	vb, err := Verify(ctx, srv.URL, Pins{Keys: []ed25519.PublicKey{b.SigningKey()}})
	if err != nil {
		t.Fatal(err)
	}
	owner, _ := keys.Generate()
	var key sealed.Key
	shares, _, _ := Split(&key, 1, 1)
	digest := "sha256:" + strings.Repeat("ab", 32)

	// Signed for another broker: the signature covers the broker's key.
	other, _ := keys.Generate()
	wrong := *vb
	wrong.Signing = other.Public().Signing
	err = Register(ctx, &wrong, owner.Signer(), digest, shares[0], 1)
	if err == nil || !strings.Contains(err.Error(), "not signed by owner") {
		t.Fatalf("a registration signed for another broker: %v", err)
	}
	// Sealed to another broker's key.
	wrong = *vb
	wrong.Sealing = other.Public().Sealing
	err = Register(ctx, &wrong, owner.Signer(), digest, shares[0], 1)
	if err == nil || !strings.Contains(err.Error(), "does not open with this broker's key") {
		t.Fatalf("a share sealed to another key: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, keysDir)); len(ents) != 0 {
		t.Fatalf("%d shares stored after refused registrations", len(ents))
	}
	if err := Register(ctx, vb, owner.Signer(), digest, shares[0], 1); err != nil {
		t.Fatal(err)
	}
	b2, err := New(Options{Dir: dir})
	if err != nil || b2.nkeys != 1 || b2.byOwner[owner.Public().SigningString()] != 1 || !b2.SigningKey().Equal(b.SigningKey()) {
		t.Fatalf("after a restart: %v, %d keys", err, b2.nkeys)
	}
}
