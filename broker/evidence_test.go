package broker_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/broker"
	"github.com/cloisterhq/cloister/internal/corpus"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/acl"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/seal"
	"github.com/cloisterhq/cloister/sealed"
)

// evidenceWorld is a broker and a ledger in this process (a real embedded
// CometBFT ledger at the latest rules, the broker's HTTP API on
// loopback), an owner whose artifact's key the broker holds, and a node
// registered with real software evidence and a session. The broker's
// clock is the test's: set to the time a piece of recorded evidence was
// valid, the broker judges that evidence as it would have then.
type evidenceWorld struct {
	t                   *testing.T
	lc                  *client.Client
	url                 string
	owner, node         ed25519.PrivateKey
	art                 acl.Artifact
	ph                  string
	mu                  sync.Mutex
	clock               time.Time // zero: the real clock
	ownerText, nodeText string
}

func (w *evidenceWorld) now() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.clock.IsZero() {
		return time.Now()
	}
	return w.clock
}

func (w *evidenceWorld) setClock(t time.Time) {
	w.mu.Lock()
	w.clock = t
	w.mu.Unlock()
}

func newEvidenceWorld(t *testing.T) *evidenceWorld {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := ledger.OpenEmbedded(ctx, filepath.Join(t.TempDir(), "ledger"), ledger.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	lsrv := httptest.NewServer(e.Handler())
	t.Cleanup(lsrv.Close)
	w := &evidenceWorld{t: t, ph: strings.Repeat("cd", 32)}
	if w.lc, err = client.New(lsrv.URL); err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Options{Dir: t.TempDir(), Ledger: w.lc, Now: w.now})
	if err != nil {
		t.Fatal(err)
	}
	bsrv := httptest.NewServer(b.Handler())
	t.Cleanup(bsrv.Close)
	w.url = bsrv.URL
	_, w.owner, _ = ed25519.GenerateKey(nil)
	_, w.node, _ = ed25519.GenerateKey(nil)
	w.ownerText = protocol.FormatEd25519Key(w.owner.Public().(ed25519.PublicKey))
	w.nodeText = protocol.FormatEd25519Key(w.node.Public().(ed25519.PublicKey))

	// The owner's artifact, its key held whole (1 of 1) by the broker it
	// verified.
	var key sealed.Key
	rand.Read(key[:])
	shares, com, err := broker.Split(&key, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	d := sha256.Sum256([]byte(t.Name()))
	w.art = acl.Artifact{Digest: "sha256:" + hex.EncodeToString(d[:]), PlaintextSHA256: strings.Repeat("01", 32),
		Brokers: []string{protocol.FormatEd25519Key(b.SigningKey())}, Threshold: 1, Commitment: com}
	vb, err := broker.Verify(ctx, w.url, broker.Pins{Keys: []ed25519.PublicKey{b.SigningKey()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := broker.Register(ctx, vb, w.owner, w.art.Digest, shares[0], 1); err != nil {
		t.Fatal(err)
	}
	appendEntry(t, w.lc, w.owner, acl.KindArtifactRegistered, w.art)

	// The node registers as a node does (software evidence over the
	// registration report data) and opens session s1.
	att, err := software.NewAttester(w.node)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := att.Attest(ctx, protocol.RegistrationReportData(w.node.Public().(ed25519.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	evj, _ := json.Marshal(ev)
	appendEntry(t, w.lc, w.node, ledger.KindNodeRegistered, map[string]any{"platform_key": w.nodeText, "class": "software",
		"evidence": base64.StdEncoding.EncodeToString(evj)})
	appendEntry(t, w.lc, w.node, ledger.KindSessionEvent, map[string]any{"session": "s1", "event": "session.created", "policy_hash": w.ph})
	return w
}

// release asks the broker for the key on grant for session s1 of the
// node, with evidence made by attest over the request's report data.
func (w *evidenceWorld) release(grant uint64, evidence func(rd [attest.ReportDataSize]byte) *attest.Evidence) (int, broker.Error) {
	w.t.Helper()
	sk, err := seal.GenerateKey()
	if err != nil {
		w.t.Fatal(err)
	}
	req := &broker.ReleaseRequest{Owner: w.ownerText, Artifact: w.art.Digest, Grant: grant, Node: w.nodeText, Session: "s1",
		PolicyHash: w.ph, SessionKey: keys.FormatSealingKey(sk.PublicKey()), Nonce: fetchNonce(w.t, w.url)}
	req.Evidence = evidence(broker.ReleaseReportData(req))
	body, _ := json.Marshal(req)
	resp, err := http.Post(w.url+"/v1/release", "application/json", bytes.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var e broker.Error
	json.Unmarshal(raw, &e)
	return resp.StatusCode, e
}

// releases counts the key.released entries on the ledger.
func (w *evidenceWorld) releases() int {
	w.t.Helper()
	page, err := w.lc.Entries(context.Background(), 0, 1000)
	if err != nil {
		w.t.Fatal(err)
	}
	n := 0
	for _, e := range page.Entries {
		if e.Signed.Entry.Kind == acl.KindKeyReleased {
			n++
		}
	}
	return n
}

func (w *evidenceWorld) softwareEvidence(rd [attest.ReportDataSize]byte) *attest.Evidence {
	att, _ := software.NewAttester(w.node)
	ev, err := att.Attest(context.Background(), rd)
	if err != nil {
		w.t.Fatal(err)
	}
	return ev
}

func conformanceEvidence(t *testing.T, class attest.Class, rel string) *attest.Evidence {
	data, err := attest.DecodeInput(corpus.Read(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return &attest.Evidence{Class: class, Data: data}
}

// TestReleaseRefusesDebugEvidence: a release asked for with evidence of a
// debug-mode isolate is refused by the broker, for that reason, and
// nothing is released or recorded. The evidence is a real AWS Nitro
// attestation document from a debug-mode enclave (PCRs all zero), and the
// broker's clock is set inside its certificate's validity (2024-09-07,
// 14:37:36 to 17:37:39 UTC), where the document verifies when debug is
// allowed: the refusal can only be for debug. Its report data binds
// nothing of this request, which the broker would check next.
func TestReleaseRefusesDebugEvidence(t *testing.T) {
	w := newEvidenceWorld(t)
	g := appendEntry(t, w.lc, w.owner, acl.KindGranted, acl.Grant{Artifact: w.art.Digest, Owner: w.ownerText,
		Grantee: acl.Grantee{Node: w.nodeText, Session: "s1"}, NotAfter: acl.FormatTime(time.Now().Add(time.Hour)), MaxUses: 2})
	doc := conformanceEvidence(t, attest.ClassNitro, "attestation/nitro/nitrite/nitro_attestation_debug.b64")
	then := time.Date(2024, 9, 7, 14, 38, 6, 0, time.UTC)
	if c, err := attest.Verify(context.Background(), doc, attest.VerifyOptions{Now: then, AllowDebug: true}); err != nil || !c.Debug {
		t.Fatalf("the debug document at %s with debug allowed: %v (debug %v)", then, err, c != nil && c.Debug)
	}
	w.setClock(then)
	status, e := w.release(g, func([attest.ReportDataSize]byte) *attest.Evidence { return doc })
	if status != http.StatusForbidden || e.Code != broker.CodeEvidence || !strings.Contains(e.Reason, attest.ErrDebug.Error()) {
		t.Fatalf("debug evidence: HTTP %d %+v; want 403 %s naming %q", status, e, broker.CodeEvidence, attest.ErrDebug)
	}
	if n := w.releases(); n != 0 {
		t.Fatalf("%d key.released entries after a refusal", n)
	}
	// The same grant, asked for by the node with its own evidence, is
	// released: the refusal was the evidence's.
	w.setClock(time.Time{})
	if status, e := w.release(g, w.softwareEvidence); status != http.StatusOK {
		t.Fatalf("the node's own evidence: HTTP %d %+v", status, e)
	}
}

// TestReleaseRefusesEvidenceBelowTCBFloor: a delegate's grant carries its
// delegation's minimum TCB to the broker, which refuses release evidence
// of a floored class whose security versions are below it. The evidence
// is a real production TDX quote (Sapphire Rapids, not debug), verified
// at 2023-07-01; the floor is one above its TEE TCB SVN 0.
func TestReleaseRefusesEvidenceBelowTCBFloor(t *testing.T) {
	w := newEvidenceWorld(t)
	quote := conformanceEvidence(t, attest.ClassTDX, "attestation/tdx/tdx_prod_quote_SPR_E4.dat")
	then := time.Date(2023, 7, 1, 0, 0, 0, 0, time.UTC)
	c, err := attest.Verify(context.Background(), quote, attest.VerifyOptions{Now: then})
	if err != nil {
		t.Fatal(err)
	}
	have, ok := c.SVN["tee_tcb_svn0"]
	if !ok {
		t.Fatalf("the quote's claims carry no tee_tcb_svn0: %v", c.SVN)
	}
	_, dispatcher, _ := ed25519.GenerateKey(nil)
	di := appendEntry(t, w.lc, w.owner, acl.KindDelegated, acl.Delegation{Artifact: w.art.Digest,
		Delegate: protocol.FormatEd25519Key(dispatcher.Public().(ed25519.PublicKey)), NotAfter: acl.FormatTime(time.Now().Add(time.Hour)),
		Limits: acl.Limits{MaxDurationSeconds: 3600, MaxUses: 2, MinTCB: map[string]map[string]uint64{"tdx": {"tee_tcb_svn0": have + 1}}}})
	// The grantee node is software, a class the floor leaves open: the
	// ledger accepts the delegate's grant.
	g := appendEntry(t, w.lc, dispatcher, acl.KindGranted, acl.Grant{Artifact: w.art.Digest, Owner: w.ownerText,
		Grantee: acl.Grantee{Node: w.nodeText, Session: "s1"}, NotAfter: acl.FormatTime(time.Now().Add(30 * time.Minute)), MaxUses: 2, Delegation: &di})
	w.setClock(then)
	status, e := w.release(g, func([attest.ReportDataSize]byte) *attest.Evidence { return quote })
	want := fmt.Sprintf(`TCB component "tee_tcb_svn0" of the isolate's tdx evidence is %d, below the delegation's minimum %d`, have, have+1)
	if status != http.StatusForbidden || e.Code != broker.CodeEvidence || !strings.Contains(e.Reason, want) {
		t.Fatalf("evidence below the floor: HTTP %d %+v; want 403 %s saying %q", status, e, broker.CodeEvidence, want)
	}
	if n := w.releases(); n != 0 {
		t.Fatalf("%d key.released entries after a refusal", n)
	}
	w.setClock(time.Time{})
	if status, e := w.release(g, w.softwareEvidence); status != http.StatusOK {
		t.Fatalf("the node's own software evidence: HTTP %d %+v", status, e)
	}
}
