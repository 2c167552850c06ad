package dispatch

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// embeddedLedger is a one-validator ledger in this process, served over
// HTTP on loopback, and a context bounding the test's calls; both end
// with the test.
func embeddedLedger(t *testing.T, chain string) (context.Context, *lclient.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	e, err := ledger.OpenEmbedded(ctx, t.TempDir(), ledger.EmbeddedOptions{ChainID: chain})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	srv := httptest.NewServer(e.Handler())
	t.Cleanup(srv.Close)
	lc, err := lclient.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return ctx, lc
}

// A candidate that renews its offer between the dispatcher's reading of
// the offers and its assignment entry makes the state machine refuse the
// entry for good (missing reference: not the latest offer). The
// dispatcher sees that at the first refusal, drops its cached offers and
// decides again, instead of retrying the same entry for 15 seconds. So
// with a provider's record read before a run of it finished (decision
// 0165).
func TestRenewedOfferStopsTheRetry(t *testing.T) {
	ctx, lc := embeddedLedger(t, "dispatch-stale")
	_, nk, _ := ed25519.GenerateKey(nil)
	node := protocol.FormatEd25519Key(nk.Public().(ed25519.PublicKey))
	app := func(kind verify.Kind, body any) uint64 {
		t.Helper()
		se, err := verify.NewEntry(nk, kind, body)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := lc.Append(ctx, se)
		if err != nil {
			t.Fatal(err)
		}
		return rc.Index
	}
	app(ledger.KindNodeRegistered, map[string]any{"platform_key": node, "class": "software",
		"evidence": base64.StdEncoding.EncodeToString([]byte("{}")), "endpoint": "https://127.0.0.1:1"})
	offer := lclient.Offer{Classes: []string{"software"}, EvidenceDigest: strings.Repeat("0", 64), Memory: 1 << 30, Cores: 1, Concurrency: 1, TTL: 600}
	first := app(ledger.KindOffer, offer)
	dk, _ := keys.Generate()
	d, err := New(Options{Ledger: lc, Key: dk.Signer()})
	if err != nil {
		t.Fatal(err)
	}
	cands := []deal.Candidate{{Node: node, Offer: first}}
	if v, err := d.liveView(ctx, true); err != nil || len(v.offers.Offers) != 1 {
		t.Fatalf("reading the view: %v", err)
	}
	if err := d.offersCurrent(ctx, cands); err != nil {
		t.Fatalf("the offer just read: %v", err)
	}
	if !d.viewCached() {
		t.Fatal("a current view was dropped")
	}
	app(ledger.KindOffer, offer) // the heartbeat
	if err := d.offersCurrent(ctx, cands); !errors.Is(err, errStaleOffers) {
		t.Fatalf("after a renewal: %v, want errStaleOffers", err)
	}
	if d.viewCached() {
		t.Error("the stale offers stay cached")
	}
	// The records: a count of failures the ledger does not hold makes the
	// state machine refuse the assignment, and the view is dropped too.
	if _, err := d.liveView(ctx, true); err != nil {
		t.Fatal(err)
	}
	if err := d.recordsCurrent(ctx, []deal.Candidate{{Node: node, Failures: 0}}); err != nil {
		t.Fatalf("the ledger's count of failures: %v", err)
	}
	if err := d.recordsCurrent(ctx, []deal.Candidate{{Node: node, Failures: 1}}); !errors.Is(err, errStaleRecords) {
		t.Fatalf("a count the ledger does not hold: %v, want errStaleRecords", err)
	}
	if d.viewCached() {
		t.Error("the stale records stay cached")
	}
	// An entry refused for a missing reference is not retried once the
	// offers it names are stale.
	a := deal.Assignment{Request: strings.Repeat("ab", 32), Token: 1, Node: node, Session: strings.Repeat("cd", 16), PolicyHash: strings.Repeat("ef", 32),
		Policy: []byte(`{}`), Class: "software", ClaimsSHA256: strings.Repeat("01", 32), Candidates: cands, RunDeadline: acl.FormatTime(time.Now().Add(time.Minute))}
	t0 := time.Now()
	ae, err := verify.NewEntry(dk.Signer(), deal.KindAssigned, a)
	if err != nil {
		t.Fatal(err)
	}
	_, err = d.appendRetry(ctx, []*verify.SignedEntry{ae}, func(ctx context.Context) error { return d.offersCurrent(ctx, cands) })
	if !errors.Is(err, errStaleOffers) || !strings.Contains(err.Error(), "no market.request") {
		t.Fatalf("appendRetry: %v, want errStaleOffers after a missing-reference refusal", err)
	}
	if time.Since(t0) > 5*time.Second {
		t.Fatalf("appendRetry took %s: it retried a refusal that cannot pass", time.Since(t0))
	}
}

func (d *Dispatcher) viewCached() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.view != nil
}
