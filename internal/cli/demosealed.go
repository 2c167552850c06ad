package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/blob/server"
	"github.com/cloisterhq/cloister/broker"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/sealed"
)

func newDemoSealedCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sealed-program",
		Short: "Run a sealed program whose key three brokers release, 2 of 3, only to an attested isolate under a ledger grant",
		Long: `sealed-program plays the marketplace's key path on one machine, each service
on its own loopback port: an embedded ledger validator (its HTTP API), a
Cloister blob store, three key brokers, and a "cloister node" process.

  owner    seals wordcount.wasm under a fresh content key, pushes the
           ciphertext to the store, verifies each broker's evidence and
           shares the key 2-of-3 among them, registers the artifact on the
           ledger
  parties  create a session whose policy names the sealed program (digest,
           owner, store, brokers with pinned keys, threshold) and verify
           its evidence; the owner grants the key to software isolates of
           the measurement they saw, for two minutes and two sessions
  node     when bob's input arrives: fetches the ciphertext, finds the
           grant on the ledger, asks every broker for its share with
           evidence binding the session's HPKE key and the broker's nonce;
           each broker records key.released and answers only once it is
           committed; the node checks each share against the artifact's
           commitment, combines two, and its jailed worker gets the key in
           the secret-material frame, decrypts, checks and runs the program
  anyone   checks a key.released entry's inclusion in a cosigned checkpoint
  owner    revokes the grant; a second session's run is refused

Exit status: 0 every step behaved (the answer is right, the revoked grant is
refused); 1 otherwise.`,
		Example: `  cloister demo sealed-program`,
		Args:    cobra.NoArgs,
	}
	return componentsDemo(cmd, "show the services' logs on standard error", runSealedDemo)
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

func runSealedDemo(ctx context.Context, out, errOut io.Writer, self string, verbose bool) error {
	// A sealed program is compiled afresh each run, never cached
	// (decision 0072): a few seconds for this 3 MiB module, far more
	// under a race-detector build on a loaded machine.
	ctx, stage, end, err := stageDemo(ctx, out, errOut, verbose, "sealed", 15*time.Minute)
	if err != nil {
		return err
	}
	defer end()
	pr, dir := stage.pr, stage.dir
	ex, text, want, err := wordcountExample()
	if err != nil {
		return err
	}
	logw := stage.events
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

	// The node: a "cloister node" process of its own, recording on the
	// demo's ledger, reading grants from it.
	nodeDir := filepath.Join(dir, "node")
	if err := os.MkdirAll(nodeDir, 0o700); err != nil {
		return err
	}
	pk, _, err := keys.LoadOrCreate(filepath.Join(nodeDir, node.PlatformKeyFile))
	if err != nil {
		return err
	}
	nodeText := pk.Public().SigningString()
	nodeURL, stopNode, err := startDemoNode(ctx, self, nodeDir, ledgerURL, logw)
	if err != nil {
		return err
	}
	defer stopNode()
	pr.step("node %s… started: cloister node --ledger %s, listening on %s", nodeText[:20], ledgerURL, nodeURL)

	// The parties' policy names the sealed program: its digest and owner,
	// the store, the brokers with their pinned keys, the threshold.
	bob, err := keys.Generate()
	if err != nil {
		return err
	}
	dave, err := keys.Generate()
	if err != nil {
		return err
	}
	sp := &policy.SealedProgram{Digest: sum.Digest, Owner: ownerText, Stores: []string{storeURL + "/programs"}, Threshold: 2}
	for i, u := range brokerURLs {
		sp.Brokers = append(sp.Brokers, policy.SealedBroker{URL: u, Key: protocol.FormatEd25519Key(pins[i])})
	}
	doc, err := json.MarshalIndent(&policy.Policy{
		Version: policy.Version,
		Name:    "wordcount-sealed",
		Principals: []policy.Principal{
			{ID: "bob", SigningKey: bob.Public().SigningString(), Roles: []policy.Role{policy.RoleDataProvider}},
			{ID: "dave", SigningKey: dave.Public().SigningString(), SealingKey: dave.Public().SealingString(), Roles: []policy.Role{policy.RoleResultReader}},
		},
		Programs: []policy.Program{{Name: "wordcount.wasm", SHA256: sum.SHA256, Sealed: sp}},
		Inputs:   []policy.Input{{Name: "text", Provider: "bob"}},
		Outputs:  []policy.Output{{Name: "count.json", Readers: []string{"dave"}}},
		Isolates: []policy.Isolate{{Class: "software", PlatformKeys: []string{nodeText}}},
		Limits:   policy.Limits{Memory: "256MiB", Timeout: "2m", MaxOutput: "1MiB"},
		Expires:  time.Now().Add(time.Hour).UTC().Truncate(time.Second),
	}, "", "  ")
	if err != nil {
		return err
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		return fmt.Errorf("demo: policy: %w", err)
	}
	c, err := client.Dial(ctx, nodeURL, client.WithPlatformKeys(pk.Public().Signing))
	if err != nil {
		return err
	}
	defer c.Close()
	session := func() (*client.AttestedSession, error) {
		id, err := c.CreateSession(ctx, doc)
		if err != nil {
			return nil, fmt.Errorf("demo: creating a session: %w", err)
		}
		as, err := c.Attest(ctx, id, pol)
		if err != nil {
			return nil, fmt.Errorf("demo: attesting session %s: %w", id, err)
		}
		return as, nil
	}
	as1, err := session()
	if err != nil {
		return err
	}
	defer as1.CloseIdleConnections()
	measurement := hex.EncodeToString(as1.Claims().Measurement)
	pr.step("parties created session %s… (policy %s…, sealed program %s…) and verified its evidence (class %s, runtime %s…)",
		as1.ID()[:8], pol.HashHex()[:16], sum.Digest[:23], as1.Claims().Class, measurement[:16])

	grant := acl.Grant{Artifact: sum.Digest, Owner: ownerText, Grantee: acl.Grantee{Class: "software", Measurements: []string{measurement}},
		NotAfter: acl.FormatTime(time.Now().Add(2 * time.Minute)), MaxUses: 2}
	gi, err := sealedDemoAppend(ctx, lc, owner.Signer(), acl.KindGranted, grant)
	if err != nil {
		return err
	}
	pr.step("owner granted the key to software isolates of that measurement until %s, 2 sessions: acl.granted #%d", grant.NotAfter, gi)

	// The run: the node fetches the ciphertext, obtains the key from
	// the brokers (each after its key.released is committed), and its
	// jailed worker decrypts, checks and runs the program.
	run := func(as *client.AttestedSession) (*client.Status, error) {
		if _, err := as.UploadInput(ctx, bob, "text", text); err != nil {
			return nil, fmt.Errorf("demo: uploading text: %w", err)
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		return as.Wait(wctx)
	}
	st1, err := run(as1)
	if err != nil {
		return err
	}
	if st1.Reason != "" || st1.Report == nil {
		return fmt.Errorf("demo: the run: session is %s: %s", stateName(st1.State), st1.Reason)
	}
	got, err := as1.Result(ctx, dave, "count.json")
	if err != nil {
		return fmt.Errorf("demo: result: %w", err)
	}
	if !jsonEqual(got, want) {
		return fmt.Errorf("demo: count.json is %s, want %s", got, want)
	}
	pr.step("bob uploaded the text; the node fetched the ciphertext, obtained the key, its jailed worker decrypted the program, checked its sha256 and ran it (%d ms); dave opened count.json %s (expected)",
		st1.Report.WallMs, compactJSON(got))
	if len(st1.Report.Protections) > 0 {
		pr.note("isolation: %v", st1.Report.Protections)
	}
	list, err := listACL(ctx, lc, sum.Digest, ownerText)
	if err != nil {
		return err
	}
	var rel []uint64
	for _, r := range list.Releases {
		if r.Release.Session == as1.ID() && r.Release.Node == nodeText {
			rel = append(rel, r.Index)
		}
	}
	if len(rel) < 2 {
		return fmt.Errorf("demo: the ledger holds %d key.released entries for the session, want at least 2", len(rel))
	}
	pr.step("the ledger holds %d key.released entries for that session (%v), each committed before its broker answered", len(rel), rel)

	// Anyone: the release is on the record.
	idx := rel[0]
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
	as2, err := session()
	if err != nil {
		return err
	}
	defer as2.CloseIdleConnections()
	st2, err := run(as2)
	if err != nil {
		return err
	}
	if st2.Report != nil || !strings.Contains(st2.Reason, "revoked") {
		return fmt.Errorf("demo: a run after the revocation: session %s (%s), want its key refused", stateName(st2.State), st2.Reason)
	}
	pr.step("a second session's run is refused: every broker's key.released was refused by the ledger (grant %d was revoked by entry %d)", gi, ri)
	pr.note("%s", st2.Reason)
	fmt.Fprintf(out, "all steps behaved in %.1f s\n", time.Since(pr.start).Seconds())
	return nil
}

// startDemoNode starts "cloister node" (self) on a free loopback port
// with its data in dir, recording on ledgerURL, and returns its URL once
// it listens; stop ends it.
func startDemoNode(ctx context.Context, self, dir, ledgerURL string, logw io.Writer) (string, func(), error) {
	cmd := exec.Command(self, "node", "--data", dir, "--listen", "127.0.0.1:0", "--ledger", ledgerURL, "--warm-workers", "0")
	cmd.Env = append(os.Environ(), "CLOISTER_TEST_CLI=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("demo: starting the node: %w", err)
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	urlc := make(chan string, 1)
	var tail strings.Builder
	go func() {
		re := regexp.MustCompile(`msg="node listening" url=(https://127\.0\.0\.1:[0-9]+)`)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			fmt.Fprintln(logw, sc.Text())
			if m := re.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urlc <- m[1]:
				default:
				}
			} else if tail.Len() < 4096 {
				tail.WriteString(sc.Text() + "\n")
			}
		}
		close(urlc)
	}()
	select {
	case u, ok := <-urlc:
		if ok {
			return u, stop, nil
		}
		stop()
		return "", nil, fmt.Errorf("demo: the node exited before listening")
	case <-time.After(2 * time.Minute):
	case <-ctx.Done():
	}
	stop()
	return "", nil, fmt.Errorf("demo: the node did not listen within 2 minutes")
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
