package ledger

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/challenge"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestFourValidatorsVRFBeacon: under CometBFT with four validators, one
// of which withholds its VRF share — or sends one that does not verify,
// which the others' VerifyVoteExtension refuses, so that its vote counts
// for nothing — an epoch still gets its beacon from the other three's
// shares in their vote extensions, and a client checks every share and
// recomputes the draw from what the ledger serves.
func TestFourValidatorsVRFBeacon(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four validators; skipped with -short")
	}
	for _, bad := range []string{"withholds", "forges"} {
		t.Run(bad, func(t *testing.T) { fourValidatorsVRF(t, bad == "forges") })
	}
}

func fourValidatorsVRF(t *testing.T, forge bool) {
	homes, vs := startTestnet(t, 4)
	withheld := vs[3].ln.app.privKey.Public().(ed25519.PublicKey)
	if forge {
		vs[3].ln.app.forgeVRF.Store(true)
	} else {
		vs[3].ln.app.withholdVRF.Store(true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	org := newTestKey(t)
	must := func(v *Validator, key ed25519.PrivateKey, kind verify.Kind, body any) {
		t.Helper()
		if _, err := v.Append(ctx, signEntry(t, key, kind, body)); err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
	}
	must(vs[0], vs[0].ln.app.privKey, KindMemberAdmitted, map[string]any{"member": pubText(org)})
	for i := range 2 {
		k := newTestKey(t)
		b := nodeBody(k.Public().(ed25519.PublicKey))
		b["organisation"], b["endpoint"] = pubText(org), "https://127.0.0.1:1"
		must(vs[i], k, KindNodeRegistered, b)
		must(vs[i], k, KindOffer, offerBody(600))
	}
	must(vs[1], org, KindPieeOperator, testOperator("matmul"))
	must(vs[2], org, KindPieeEpoch, challenge.Epoch{CommitSeconds: 30, RevealSeconds: 30})

	lc, err := lclient.New(homes[2].APIURL)
	if err != nil {
		t.Fatal(err)
	}
	var ep *lclient.PieeEpoch
	for {
		if ep, err = lc.PieeEpoch(ctx, 1, nil); err != nil {
			t.Fatalf("epoch 1 as a client checks it: %v", err)
		}
		if ep.Draw != nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no beacon for epoch 1 within the test's time")
		case <-time.After(200 * time.Millisecond):
		}
	}
	if ep.Epoch.Beacon != challenge.BeaconVRF || ep.BeaconNote != nil || len(ep.Draw) != 2 {
		t.Fatalf("epoch 1: beacon %q, note %d bytes, %d challenges", ep.Epoch.Beacon, len(ep.BeaconNote), len(ep.Draw))
	}
	var shares *challenge.BeaconShares
	for _, se := range ep.Entries {
		if se.Entry.Kind == challenge.KindBeacon {
			if shares, err = challenge.DecodeBeacon(se.Entry.Body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if shares == nil || len(shares.Shares) != 3 {
		t.Fatalf("beacon shares: %+v, want the three honest validators'", shares)
	}
	for _, s := range shares.Shares {
		if s.Validator == protocol.FormatEd25519Key(withheld) {
			t.Fatal("the misbehaving validator's share is on the ledger")
		}
	}
	// Every validator serves the same draw (once it has the block).
	for _, h := range homes {
		c, _ := lclient.New(h.APIURL)
		for {
			other, err := c.PieeEpoch(ctx, 1, nil)
			if err == nil && other.Draw == nil && ctx.Err() == nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			if err != nil || len(other.Draw) != 2 || other.Draw[0].Seed != ep.Draw[0].Seed {
				t.Fatalf("%s: %v", h.APIURL, errors.Join(err, errors.New("another draw")))
			}
			break
		}
	}
	if forge {
		return
	}
	// A server lying about the draw, or serving shares short of the
	// quorum, is caught by the client.
	vs0, err := lc.Validators(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lie := func(edit func(map[string]any)) error {
		resp, err := http.Get(homes[0].APIURL + "/v1/piee/epochs/1")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var doc map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		edit(doc)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { json.NewEncoder(w).Encode(doc) }))
		defer srv.Close()
		c, _ := lclient.New(srv.URL)
		_, err = c.PieeEpoch(ctx, 1, vs0)
		return err
	}
	if err := lie(func(doc map[string]any) {
		d := doc["draw"].([]any)
		d[0].(map[string]any)["seed"], d[1].(map[string]any)["seed"] = d[1].(map[string]any)["seed"], d[0].(map[string]any)["seed"]
	}); err == nil || !strings.Contains(err.Error(), "not the one its VRF shares give") {
		t.Fatalf("a swapped draw: %v", err)
	}
	if err := lie(func(doc map[string]any) {
		var kept []any
		for _, e := range doc["entries"].([]any) {
			if !strings.Contains(fmt.Sprint(e), challenge.KindBeacon) {
				kept = append(kept, e)
			}
		}
		doc["entries"] = kept
	}); err == nil || !strings.Contains(err.Error(), "without its piee.beacon entry") {
		t.Fatalf("a draw without its shares: %v", err)
	}
}
