package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
)

// Create requests that are refused — here signed by a key of the
// sender's own that the allow-list does not name, the soak's impostor —
// are not remembered against replay: a flood of them cannot fill the
// replay window and lock admitted creators out (the soak found this at
// about 900 impostor requests/s: after five minutes every honest create
// was refused as if the node's create rate were exhausted). A replay of
// an admitted request is still refused, and gives its rates back.
func TestRefusedCreatesDoNotFillTheReplayWindow(t *testing.T) {
	owner, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	impostor, err := keys.Generate()
	if err != nil {
		t.Fatal(err)
	}
	a, err := newAdmitter(nil, Admission{Mode: AdmitAllowList, AllowKeys: []ed25519.PublicKey{owner.Public().Signing}})
	if err != nil {
		t.Fatal(err)
	}
	if a.nonces.Len() != 0 || createNonces(a.q) < int(a.q.CreateRate*protocol.ReplayMemory.Seconds()) {
		t.Fatalf("replay window of %d for %g creates/s", createNonces(a.q), a.q.CreateRate)
	}
	a.nonces = protocol.NewReplayWindow(8)
	doc := []byte(`{"version":1}`)
	now := time.Now()
	signed := func(k *keys.PrivateKey) *cloisterv1.CreateSessionRequest {
		nonce := make([]byte, 16)
		rand.Read(nonce)
		ms := now.UnixMilli()
		msg := protocol.RequestMessage("", protocol.OpCreateSession, "", sha256.Sum256(doc), [32]byte{}, ms, nonce)
		return &cloisterv1.CreateSessionRequest{Policy: doc,
			Auth: &cloisterv1.SignedRequest{Principal: k.Public().SigningString(), UnixMs: ms, Nonce: nonce, Signature: k.Sign(msg)}}
	}
	create := func(req *cloisterv1.CreateSessionRequest) error {
		who, err := a.admit(context.Background(), req, "127.0.0.1:1", now)
		if err != nil {
			return err
		}
		return a.reserveSession(who, int64(len(doc)), req.Auth, now)
	}
	for range 100 {
		err := create(signed(impostor))
		if ce := new(connect.Error); !errors.As(err, &ce) || !strings.Contains(err.Error(), "not on this node's allow-list") {
			t.Fatalf("impostor's create: %v", err)
		}
	}
	if n := a.nonces.Len(); n != 0 {
		t.Fatalf("the replay window holds %d nonces of refused requests", n)
	}
	req := signed(owner)
	if err := create(req); err != nil {
		t.Fatalf("admitted creator refused after the impostor's flood: %v", err)
	}
	tokens := a.rates.total.TokensAt(now)
	if err := create(req); err == nil || !strings.Contains(err.Error(), "replays one already seen") {
		t.Fatalf("replayed create: %v", err)
	}
	if got := a.rates.total.TokensAt(now); got != tokens {
		t.Errorf("a refused replay took the node's create rate: %g tokens, had %g", got, tokens)
	}
	if a.sessions != 1 {
		t.Errorf("%d sessions counted, want 1", a.sessions)
	}
}
