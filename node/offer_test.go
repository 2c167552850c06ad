package node_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/node"
)

// TestProviderOnLedger: a node registers with its endpoint and its
// organisation (a consortium member), publishes its offer and renews it;
// a restart with another endpoint moves it on the ledger; an organisation
// that is not a member is refused by the ledger, so the node does not
// start. Waits are bounded, none timed.
func TestProviderOnLedger(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	home := filepath.Join(tmp, "ledger")
	e, err := ledger.OpenEmbedded(ctx, home, ledger.EmbeddedOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()
	lc, err := lclient.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	vk, err := ledger.ValidatorKey(home)
	if err != nil {
		t.Fatal(err)
	}
	org, _ := keys.Generate()
	orgKey := org.Public().SigningString()
	se, err := verify.NewEntry(vk, ledger.KindMemberAdmitted, map[string]any{"member": orgKey, "name": "org1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Append(ctx, se); err != nil {
		t.Fatal(err)
	}
	start := func(dir, endpoint string, orgPub []byte) (*node.Node, error) {
		return node.New(ctx, node.Options{DataDir: dir, Runner: runtime, NoSync: true, Ledger: e, LedgerName: ledger.Origin(e.ChainID()),
			Endpoint: endpoint, Organisation: orgPub,
			Offer:  &node.OfferSpec{Memory: 1 << 30, Cores: 1, Concurrency: 2, Price: "0.5", Regions: []string{"eu-west"}, TTL: 3 * time.Second},
			Logger: slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	}
	dir := filepath.Join(tmp, "node")
	n, err := start(dir, "https://127.0.0.1:7443", org.Public().Signing)
	if err != nil {
		t.Fatal(err)
	}
	me := protocol.FormatEd25519Key(n.PlatformKey())
	first := awaitOffer(t, ctx, lc, me, func(o lclient.LiveOffer) bool { return true })
	if first.Endpoint != "https://127.0.0.1:7443" || first.Organisation != orgKey || first.Offer.Classes[0] != "software" ||
		first.Offer.Memory != 1<<30 || first.Offer.Price != "0.5" || first.Offer.TTL != 3 || len(first.Offer.EvidenceDigest) != 64 {
		t.Errorf("offer %+v", first)
	}
	// The heartbeat: a later offer replaces the first.
	awaitOffer(t, ctx, lc, me, func(o lclient.LiveOffer) bool { return o.Index > first.Index })
	n.Close()

	// Moved: the next start names another endpoint.
	n, err = start(dir, "https://127.0.0.1:8443", org.Public().Signing)
	if err != nil {
		t.Fatal(err)
	}
	awaitOffer(t, ctx, lc, me, func(o lclient.LiveOffer) bool {
		return o.Endpoint == "https://127.0.0.1:8443" && o.Organisation == orgKey
	})
	n.Close()

	// Not a member: the ledger refuses the registration.
	stranger, _ := keys.Generate()
	if _, err := start(filepath.Join(tmp, "other"), "https://127.0.0.1:9443", stranger.Public().Signing); err == nil || !strings.Contains(err.Error(), "not a consortium member") {
		t.Errorf("a node of an organisation that is not a member: %v", err)
	}
}

// awaitOffer polls the live offers until node's satisfies ok.
func awaitOffer(t *testing.T, ctx context.Context, lc *lclient.Client, node string, ok func(lclient.LiveOffer) bool) lclient.LiveOffer {
	t.Helper()
	for {
		l, err := lc.Offers(ctx)
		if err == nil {
			for _, o := range l.Offers {
				if o.Node == node && ok(o) {
					return o
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no offer of %s as awaited (%v): %+v", node, err, l)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
