package ledger

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"testing"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Only a validator admits and removes members; the state answers who is
// a member now, in process and over the API.
func TestMembers(t *testing.T) {
	dir := t.TempDir()
	e := openTestEmbedded(t, dir)
	defer e.Close()
	ctx := context.Background()
	vk, err := ValidatorKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	org := newTestKey(t)
	orgPub := org.Public().(ed25519.PublicKey)
	outsider := newTestKey(t)
	append1 := func(key ed25519.PrivateKey, kind verify.Kind, body map[string]any) error {
		_, err := e.Append(ctx, signEntry(t, key, kind, body))
		return err
	}
	wantCode := func(err error, code string) {
		t.Helper()
		var rej *verify.RejectedError
		if !errors.As(err, &rej) || rej.Code != code {
			t.Fatalf("got %v, want a refusal with code %s", err, code)
		}
	}
	// A key admits itself: refused.
	wantCode(append1(org, KindMemberAdmitted, map[string]any{"member": protocol.FormatEd25519Key(orgPub)}), verify.CodeUnauthorized)
	wantCode(append1(outsider, KindMemberAdmitted, map[string]any{"member": protocol.FormatEd25519Key(orgPub)}), verify.CodeUnauthorized)
	if ok, _ := e.IsMember(ctx, orgPub); ok {
		t.Fatal("a member without an admission")
	}
	// The validator admits it.
	if err := append1(vk, KindMemberAdmitted, map[string]any{"member": protocol.FormatEd25519Key(orgPub), "name": "org-a"}); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.IsMember(ctx, orgPub); !ok || err != nil {
		t.Fatalf("IsMember after admission: %v %v", ok, err)
	}
	wantCode(append1(vk, KindMemberAdmitted, map[string]any{"member": protocol.FormatEd25519Key(orgPub)}), verify.CodeReplay)
	wantCode(append1(vk, KindMemberAdmitted, map[string]any{"member": protocol.FormatEd25519Key(orgPub), "extra": 1}), verify.CodeMalformed)
	// Over the API.
	c := serveAPI(t, e.Handler())
	var m Member
	c.getJSON("/v1/members/"+hex.EncodeToString(orgPub), &m)
	if m.Key != protocol.FormatEd25519Key(orgPub) || m.Name != "org-a" || m.Removed != 0 {
		t.Fatalf("member over the API: %+v", m)
	}
	if status, _ := c.do("GET", "/v1/members/"+hex.EncodeToString(outsider.Public().(ed25519.PublicKey)), nil); status != 404 {
		t.Fatalf("an outsider: status %d, want 404", status)
	}
	// Removal: by a validator only, once.
	wantCode(append1(org, KindMemberRemoved, map[string]any{"member": protocol.FormatEd25519Key(orgPub)}), verify.CodeUnauthorized)
	if err := append1(vk, KindMemberRemoved, map[string]any{"member": protocol.FormatEd25519Key(orgPub)}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.IsMember(ctx, orgPub); ok {
		t.Fatal("still a member after removal")
	}
	wantCode(append1(vk, KindMemberRemoved, map[string]any{"member": protocol.FormatEd25519Key(orgPub)}), verify.CodeReplay)
	// Admitted again.
	if err := append1(vk, KindMemberAdmitted, map[string]any{"member": protocol.FormatEd25519Key(orgPub)}); err != nil {
		t.Fatal(err)
	}
	if ok, _ := e.IsMember(ctx, orgPub); !ok {
		t.Fatal("not a member after a second admission")
	}
}
