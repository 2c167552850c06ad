package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/software"
	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/blob/server"
	"github.com/cloisterhq/cloister/broker"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/seal"
	"github.com/cloisterhq/cloister/sealed"
)

func newDemoSealedCmd() *cobra.Command {
	var cacheDir string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "sealed-program",
		Short: "Run a sealed program whose key three brokers release, 2 of 3, only to an attested isolate under a ledger grant",
		Long: `sealed-program plays the marketplace's key path on one machine, each service
on its own loopback port: an embedded ledger validator (its HTTP API), a
Cloister blob store, three key brokers, and the jailed isolate runtime.

  owner    seals wordcount.wasm under a fresh content key, pushes the
           ciphertext to the store, verifies each broker's evidence and
           shares the key 2-of-3 among them, registers the artifact on the
           ledger, and grants the key to one session of one node for two
           minutes and one use
  node     records the session, fetches the ciphertext, asks every broker
           for its share with evidence binding the session's HPKE key and
           the broker's nonce; each broker records key.released and answers
           only once it is committed; the node checks each share against
           the artifact's commitment, combines two, and the jailed worker
           decrypts and runs the program
  anyone   checks a key.released entry's inclusion in a cosigned checkpoint
  owner    revokes the grant; the node's next request is refused

The node here is played by the demo: its platform key signs its ledger
entries and its software evidence, and it runs the program in the same
jailed isolate runtime a node uses; "cloister node" does not yet run
policies naming sealed programs (docs/broker.md).

Exit status: 0 every step behaved (the answer is right, the revoked grant is
refused); 1 otherwise.`,
		Example: `  cloister demo sealed-program`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cacheDir == "" {
				cacheDir = defaultDemoCache()
			}
			if err := runSealedDemo(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), cacheDir, verbose); err != nil {
				return failure(err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&cacheDir, "cache", "", "directory for the isolate runtime's cache (default: the user cache directory)")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "show the services' logs on standard error")
	return cmd
}

// serveLoopback serves h on a fresh loopback port under the connection
// bounds; stop ends it.
func serveLoopback(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := httpguard.NewServer(h, httpguard.Limits{}, nil, nil)
	go srv.Serve(httpguard.Listen(ln, httpguard.Limits{}, nil))
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

func runSealedDemo(ctx context.Context, out, errOut io.Writer, cacheDir string, verbose bool) error {
	pr := &demoPrinter{w: out, start: time.Now(), last: time.Now()}
	// A sealed program is compiled afresh each run, never cached
	// (decision 0072): a few seconds for this 3 MiB module, far more
	// under a race-detector build on a loaded machine.
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	ex, err := examples.Lookup("wordcount")
	if err != nil {
		return err
	}
	var text, want []byte
	for _, f := range ex.Inputs {
		if f.Name == "text" {
			text = f.Data
		}
	}
	for _, f := range ex.Outputs {
		if f.Name == "count.json" {
			want = f.Data
		}
	}
	dir, err := os.MkdirTemp("", "cloister-demo-sealed-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return fmt.Errorf("demo: cache directory: %w", err)
	}
	logw := io.Discard
	if verbose {
		logw = errOut
	}
	logger := slog.New(slog.NewTextHandler(logw, nil))

	// The services.
	lg, err := ledger.OpenEmbedded(ctx, filepath.Join(dir, "ledger"), ledger.EmbeddedOptions{Logger: logger})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer lg.Close()
	ledgerURL, stopLedger, err := serveLoopback(lg.Handler())
	if err != nil {
		return err
	}
	defer stopLedger()
	lc, err := lclient.New(ledgerURL)
	if err != nil {
		return err
	}
	owner, err := keys.Generate()
	if err != nil {
		return err
	}
	ownerText := owner.Public().SigningString()
	bs, err := server.New(server.Options{Dir: filepath.Join(dir, "store"), Pushers: map[string]int64{ownerText: 0}, Logger: logger})
	if err != nil {
		return err
	}
	defer bs.Close()
	storeURL, stopStore, err := serveLoopback(bs.Handler())
	if err != nil {
		return err
	}
	defer stopStore()
	var brokerURLs []string
	var pins []ed25519.PublicKey
	for i := range 3 {
		b, err := broker.New(broker.Options{Dir: filepath.Join(dir, fmt.Sprintf("broker%d", i+1)), Ledger: lc, Logger: logger})
		if err != nil {
			return err
		}
		u, stop, err := serveLoopback(b.Handler())
		if err != nil {
			return err
		}
		defer stop()
		brokerURLs = append(brokerURLs, u)
		pins = append(pins, b.SigningKey())
	}
	rt, err := isolate.New(ctx, isolate.Options{DataDir: cacheDir})
	if err != nil {
		return fmt.Errorf("demo: isolate runtime: %w", err)
	}
	defer rt.Close()
	pr.step("ledger %s, blob store %s, brokers %s", ledgerURL, storeURL, strings.Join(brokerURLs, " "))

	// The owner: seal, store, share the key among verified brokers,
	// register the artifact.
	var ct bytes.Buffer
	key, sum, err := sealed.Seal(&ct, bytes.NewReader(ex.Wasm))
	if err != nil {
		return err
	}
	sealedPath := filepath.Join(dir, "wordcount.wasm.sealed")
	if err := os.WriteFile(sealedPath, ct.Bytes(), 0o600); err != nil {
		return err
	}
	pr.step("owner sealed wordcount.wasm (%d bytes) under a fresh content key: plaintext sha256 %s…, ciphertext %s…", len(ex.Wasm), sum.SHA256[:16], sum.Digest[:23])
	st, err := blob.OpenStore(storeURL+"/programs", blob.Options{Key: owner.Signer()})
	if err != nil {
		return err
	}
	if _, _, err := st.PushFile(ctx, sealedPath); err != nil {
		return fmt.Errorf("demo: pushing the sealed program: %w", err)
	}
	pr.step("owner pushed the ciphertext to %s/programs", storeURL)
	var vbs []*broker.VerifiedBroker
	for i, u := range brokerURLs {
		vb, err := broker.Verify(ctx, u, broker.Pins{Keys: []ed25519.PublicKey{pins[i]}})
		if err != nil {
			return fmt.Errorf("demo: %w", err)
		}
		vbs = append(vbs, vb)
	}
	shares, com, err := broker.Split(key, 3, 2)
	if err != nil {
		return err
	}
	for i, vb := range vbs {
		if err := broker.Register(ctx, vb, owner.Signer(), sum.Digest, shares[i], 2); err != nil {
			return fmt.Errorf("demo: %w", err)
		}
	}
	clear(key[:])
	pr.step("owner verified the 3 brokers' evidence (fresh nonce, pinned keys) and gave each one share, 2 of 3 needed")
	art := acl.Artifact{Digest: sum.Digest, PlaintextSHA256: sum.SHA256, Threshold: 2, Commitment: com}
	for _, vb := range vbs {
		art.Brokers = append(art.Brokers, vb.Info.SigningKey)
	}
	ai, err := sealedDemoAppend(ctx, lc, owner.Signer(), acl.KindArtifactRegistered, art)
	if err != nil {
		return err
	}
	pr.step("owner registered the artifact: artifact.registered #%d", ai)

	// The node and its session.
	_, nodeKey, _ := ed25519.GenerateKey(nil)
	nodeText := protocol.FormatEd25519Key(nodeKey.Public().(ed25519.PublicKey))
	att, err := software.NewAttester(nodeKey)
	if err != nil {
		return err
	}
	m, _ := software.RuntimeMeasurement()
	if _, err := sealedDemoAppend(ctx, lc, nodeKey, string(ledger.KindNodeRegistered), map[string]any{"platform_key": nodeText, "class": "software",
		"evidence": base64.StdEncoding.EncodeToString([]byte("{}")), "measurement": hex.EncodeToString(m[:])}); err != nil {
		return err
	}
	sid := make([]byte, protocol.SessionIDSize)
	rand.Read(sid)
	session := hex.EncodeToString(sid)
	policyHash := sha256hex([]byte("wordcount over a sealed program"))
	if _, err := sealedDemoAppend(ctx, lc, nodeKey, string(ledger.KindSessionEvent), map[string]any{"session": session, "event": "session.created", "policy_hash": policyHash}); err != nil {
		return err
	}
	sk, err := seal.GenerateKey()
	if err != nil {
		return err
	}
	iso := &broker.Isolate{Node: nodeText, Session: session, PolicyHash: policyHash, SessionKey: sk,
		Attest: func(ctx context.Context, rd [attest.ReportDataSize]byte) (*attest.Evidence, error) {
			return att.Attest(ctx, rd)
		}}
	pr.step("node %s… registered and opened session %s… (session.created)", nodeText[:20], session[:8])

	grant := acl.Grant{Artifact: sum.Digest, Owner: ownerText, Grantee: acl.Grantee{Node: nodeText, Session: session},
		NotAfter: acl.FormatTime(time.Now().Add(2 * time.Minute)), MaxUses: 1}
	gi, err := sealedDemoAppend(ctx, lc, owner.Signer(), acl.KindGranted, grant)
	if err != nil {
		return err
	}
	pr.step("owner granted the key to that session until %s, 1 use: acl.granted #%d", grant.NotAfter, gi)

	// The node runs the sealed program.
	loc, err := blob.OpenLocation([]string{storeURL + "/programs"}, blob.Options{})
	if err != nil {
		return err
	}
	ciphertext, _, err := loc.FetchBytes(ctx, blob.Digest(sum.Digest), 64<<20)
	if err != nil {
		return fmt.Errorf("demo: fetching the sealed program: %w", err)
	}
	pr.step("node fetched the ciphertext by digest (%d bytes)", len(ciphertext))
	ck, rel, err := broker.Obtain(ctx, ownerText, &art, gi, brokerURLs, iso)
	if err != nil {
		return fmt.Errorf("demo: obtaining the key: %w", err)
	}
	var entries []string
	for _, r := range rel {
		if r.Err != nil {
			return fmt.Errorf("demo: broker %d: %w", r.Share, r.Err)
		}
		entries = append(entries, fmt.Sprintf("#%d", r.Entry))
	}
	pr.step("node obtained the key: 3 brokers released their shares, each after its key.released entry (%s) was committed; shares checked against the commitment", strings.Join(entries, " "))
	var pt [32]byte
	hb, _ := hex.DecodeString(sum.SHA256)
	copy(pt[:], hb)
	res, err := rt.Run(ctx, &isolate.Config{Timeout: time.Minute, SealedModule: &isolate.Input{Data: ciphertext}, ModuleKey: ck, ModuleSHA256: pt,
		Name: "wordcount.wasm", Inputs: []isolate.Input{{Name: "text", Data: text}}})
	clear(ck[:])
	if err != nil {
		return fmt.Errorf("demo: isolate: %w", err)
	}
	defer res.Close()
	if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
		return fmt.Errorf("demo: the program ended %s (exit %d): %s", res.Report.Outcome, res.Report.ExitCode, res.Stderr)
	}
	var got []byte
	for i := range res.Outputs {
		if res.Outputs[i].Name == "count.json" {
			got, _ = res.Outputs[i].Bytes()
		}
	}
	if !jsonEqual(got, want) {
		return fmt.Errorf("demo: count.json is %s, want %s", got, want)
	}
	pr.step("the jailed worker decrypted the program, checked its sha256, compiled and ran it: count.json %s (expected)", compactJSON(got))
	pr.note("isolation: %v", res.Report.Protections)

	// Anyone: the release is on the record.
	idx := rel[0].Entry
	var vr *lclient.VerifyResult
	deadline := time.Now().Add(15 * time.Second)
	for {
		vr, err = lc.Verify(ctx, filepath.Join(dir, "ledger-client-state.json"), &idx)
		var apiErr *lclient.APIError
		if err == nil || !(errors.Is(err, verify.ErrNotIncluded) || errors.As(err, &apiErr) && apiErr.Code == "not_checkpointed") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("demo: verifying key.released #%d: %w", idx, err)
	}
	if vr.Entry.Signed.Entry.Kind != acl.KindKeyReleased {
		return fmt.Errorf("demo: entry %d is %s, not key.released", idx, vr.Entry.Signed.Entry.Kind)
	}
	pr.step("key.released #%d is included in the checkpoint of size %d (root %s…), cosigned with %d of %d votes", idx, vr.Checkpoint.Size,
		hex.EncodeToString(vr.Checkpoint.Root[:])[:16], vr.Checkpoint.SignedPower, vr.Checkpoint.TotalPower)
	pr.note("%s", vr.Entry.Signed.Entry.Body)

	// Revocation takes effect on the next request.
	ri, err := sealedDemoAppend(ctx, lc, owner.Signer(), acl.KindRevoked, acl.Revocation{Grant: &gi})
	if err != nil {
		return err
	}
	pr.step("owner revoked the grant: acl.revoked #%d", ri)
	_, _, err = broker.Obtain(ctx, ownerText, &art, gi, brokerURLs, iso)
	if err == nil || !strings.Contains(err.Error(), "revoked") {
		return fmt.Errorf("demo: a request after the revocation: %v, want a refusal", err)
	}
	pr.step("the node's next request is refused by every broker: the ledger refused their key.released entries (grant %d was revoked by entry %d)", gi, ri)
	fmt.Fprintf(out, "all steps behaved in %.1f s\n", time.Since(pr.start).Seconds())
	return nil
}

func sealedDemoAppend(ctx context.Context, lc *lclient.Client, k ed25519.PrivateKey, kind string, body any) (uint64, error) {
	se, err := verify.NewEntry(k, verify.Kind(kind), body)
	if err != nil {
		return 0, err
	}
	rc, err := lc.Append(ctx, se)
	if err != nil {
		return 0, fmt.Errorf("demo: %s: %w", kind, err)
	}
	return rc.Index, nil
}

func jsonEqual(a, b []byte) bool {
	return bytes.Equal(compactJSON(a), compactJSON(b))
}

func compactJSON(b []byte) []byte {
	var v any
	if json.Unmarshal(b, &v) != nil {
		return b
	}
	out, _ := json.Marshal(v)
	return out
}
