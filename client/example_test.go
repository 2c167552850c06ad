package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/policy"
)

// The delegated-computation flow as one principal sees it. Nothing is
// sent to a session before its evidence was verified against the policy:
// the upload and result calls exist only on an AttestedSession.
// (docs/sessions.md runs it against a real node.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	doc, err := os.ReadFile("psi.json")
	if err != nil {
		panic(err)
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		panic(err)
	}
	alice, err := keys.Load("alice.key")
	if err != nil {
		panic(err)
	}
	c, err := client.Dial(ctx, "https://127.0.0.1:7443")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		panic(err)
	}
	s, err := c.Attest(ctx, id, pol) // evidence checked against pol, or an error
	if err != nil {
		panic(err)
	}
	program, _ := os.ReadFile("psi-sum.wasm")
	if _, err := s.UploadProgram(ctx, alice, "psi-sum.wasm", program); err != nil {
		panic(err)
	}
	// … data providers upload inputs; the node runs the program; a
	// reader fetches its output, sealed to its own key:
	//   out, err := s.Result(ctx, dave, "result.json")
}

// A result.committed ledger entry says which envelope each reader was
// given, signed by the session key every principal pinned when it
// attested. A reader checks it against that key, never against the key
// the entry carries.
func ExampleResultCommitment_Verify() {
	sessionKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader) // the attested session's TLS key
	pinned, _ := x509.MarshalPKIXPublicKey(&sessionKey.PublicKey)    // AttestedSession.SessionKey()

	// What the node commits (package node does this for every run).
	outputs := map[string]map[string]string{"result.json": {"dave": strings.Repeat("ab", 32)}}
	policyHash := strings.Repeat("cd", 32)
	msg, _ := protocol.ResultCommitmentMessage("0123456789abcdef0123456789abcdef", policyHash, outputs)
	digest := sha256.Sum256(msg)
	sig, _ := ecdsa.SignASN1(rand.Reader, sessionKey, digest[:])
	body, _ := json.Marshal(map[string]any{"session": "0123456789abcdef0123456789abcdef", "policy_hash": policyHash,
		"outputs": outputs, "session_key": pinned, "signature": sig})

	rc, err := client.ParseResultCommitment(body)
	if err != nil {
		panic(err)
	}
	fmt.Println(rc.Verify(pinned) == nil)

	// The same commitment checked against another session's key.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherSPKI, _ := x509.MarshalPKIXPublicKey(&other.PublicKey)
	fmt.Println(rc.Verify(otherSPKI) != nil)
	// Output:
	// true
	// true
}
