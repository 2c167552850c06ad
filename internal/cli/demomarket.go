package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/dispatch"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/internal/testnet"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/sealed"
)

func newDemoMarketCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "marketplace",
		Short: "Play seed 002's secure execution flow on a test network, with a provider killed on purpose",
		Long: `marketplace plays the marketplace's flow on a test network of separate
processes ('cloister testnet': a validator, two provider nodes of two
organisations offering capacity at different prices, a key broker, a blob
store, a dispatcher), printing each step with its time:

  innovator   seals wordcount.wasm under a fresh content key, pushes the
              ciphertext to the content-addressed store, registers the key
              with the broker after verifying its evidence, registers the
              artifact, and delegates to the dispatcher the right to grant
              short ACLs (software isolates, 10 minutes, one use each)
  consumer    submits an execution request naming the program and the
              hardware it needs ("class == 'software'")
  dispatcher  ranks the live offers, boots a session on the cheapest
              provider, checks its attestation, records the assignment and
              adds a time-bound ACL entry
  consumer    checks the policy the dispatcher wrote and attests the
              isolate itself, then sends its input over attested TLS
  demo        kills that provider on purpose, as a crash would
  dispatcher  fails the assignment over to the next provider, revoking
              the dead one's grant; the consumer follows and re-attests
  isolate     fetches the encrypted program, asks the broker for the key
              (released only while the ACL is valid, key.released on the
              ledger), runs and answers
  consumer    accounts the run on the ledger, then reads the answer

It checks the answer, that the run completed on the other provider after
one failover, that the dead provider's grant was revoked and that the key
was released to the session that answered.

Exit status: 0 every step behaved; 1 otherwise.`,
		Example: `  cloister demo marketplace`,
		Args:    cobra.NoArgs,
	}
	return componentsDemo(cmd, "tell the test network's events and the consumer's own log on standard error", runMarketDemo)
}

// runMarketDemo plays the marketplace demo with self as every component's
// binary.
func runMarketDemo(ctx context.Context, out, errOut io.Writer, self string, verbose bool) error {
	ctx, stage, end, err := stageDemo(ctx, out, errOut, verbose, "market", 15*time.Minute)
	if err != nil {
		return err
	}
	defer end()
	pr, dir := stage.pr, stage.dir
	ex, text, want, err := wordcountExample()
	if err != nil {
		return err
	}
	events := stage.events

	// The network: two software providers of two organisations, the
	// first cheaper.
	nodes := []testnet.NodeSpec{
		{Class: "software", Memory: "2GiB", Cores: 2, Concurrency: 4, Price: "0.001", Regions: []string{"eu-west"}},
		{Class: "software", Memory: "1GiB", Cores: 1, Concurrency: 2, Price: "0.002", Regions: []string{"us-east"}},
	}
	nw, err := testnet.Start(ctx, testnet.Options{Dir: filepath.Join(dir, "net"), Bin: self, Nodes: nodes, Out: events, Label: "cloister demo"})
	if err != nil {
		return err
	}
	defer nw.Stop()
	info := nw.Info()
	lc := nw.Ledger()
	pr.step("test network up, each component a process: validator %s, broker %s, blob store %s, dispatcher %s",
		info.LedgerURL, info.Brokers[0].URL, info.BlobStore.URL, info.Dispatchers[0].URL)
	for _, n := range info.Nodes {
		pr.note("provider %s (%s, member of the consortium) at %s offers %s, cores %d, price %s per CPU-second", n.Name, n.Organisation, n.URL, n.Memory, n.Cores, n.Price)
	}

	// The innovator.
	run := func(args ...string) (string, error) {
		c := exec.CommandContext(ctx, self, args...)
		var o, e bytes.Buffer
		c.Stdout, c.Stderr = &o, &e
		if err := c.Run(); err != nil {
			return "", fmt.Errorf("cloister %s: %v\n%s", args[0]+" "+args[1], err, e.String())
		}
		return strings.TrimSpace(o.String()), nil
	}
	innovatorKey := info.Keys["innovator"]
	inn, err := keys.Load(innovatorKey)
	if err != nil {
		return err
	}
	wasm := filepath.Join(dir, "wordcount.wasm")
	if err := os.WriteFile(wasm, ex.Wasm, 0o600); err != nil {
		return err
	}
	sf, sj := filepath.Join(dir, "wordcount.sealed"), filepath.Join(dir, "wordcount.json")
	sumJSON, err := run("program", "seal", wasm, "--out", sf, "--json")
	if err != nil {
		return err
	}
	var sum sealed.Summary
	if err := json.Unmarshal([]byte(sumJSON), &sum); err != nil {
		return fmt.Errorf("demo: program seal --json: %w", err)
	}
	if err := os.WriteFile(sj, []byte(sumJSON), 0o600); err != nil {
		return err
	}
	pr.step("innovator sealed wordcount.wasm (%d bytes) under a fresh content key: sha256 %.16s…, ciphertext %.23s…", len(ex.Wasm), sum.SHA256, sum.Digest)
	store := info.BlobStore.URL + "/programs"
	if _, err := run("blob", "put", sf, "--store", store, "--key", innovatorKey); err != nil {
		return err
	}
	pr.step("innovator pushed the ciphertext to the content-addressed store %s", store)
	b := info.Brokers[0]
	if _, err := run("broker", "register", "--shares", "1", "--threshold", "1", "--key", innovatorKey, "--artifact", sum.Digest,
		"--content-key", sf+".key", "--sealed-json", sj, "--broker", b.URL, "--broker-key", b.SigningKey); err != nil {
		return err
	}
	artIdx, err := run("artifact", "register", "--ledger", info.LedgerURL, "--key", innovatorKey, "--sealed-json", sj)
	if err != nil {
		return err
	}
	pr.step("innovator verified the broker's evidence, gave it the content key, registered the artifact: entry %s", artIdx)
	d := info.Dispatchers[0]
	delIdx, err := run("acl", "delegate", "--ledger", info.LedgerURL, "--key", innovatorKey, "--artifact", sum.Digest,
		"--delegate", d.Key, "--not-after", "+1h", "--max-duration", "10m", "--max-uses", "1", "--class", "software")
	if err != nil {
		return err
	}
	listing := dispatch.Listing{Name: "wordcount.wasm", SHA256: sum.SHA256, Outputs: []string{"count.json"},
		Sealed: policy.SealedProgram{Digest: sum.Digest, Owner: inn.Public().SigningString(), Stores: []string{store},
			Brokers: []policy.SealedBroker{{URL: b.URL, Key: b.SigningKey}}, Threshold: 1},
		Limits: policy.Limits{Memory: "256MiB", Timeout: "2m", MaxOutput: "1MiB"}}
	if _, err := fmt.Sscan(delIdx, &listing.Delegation); err != nil {
		return fmt.Errorf("demo: acl delegate printed %q", delIdx)
	}
	lb, _ := json.Marshal(listing)
	lf := filepath.Join(dir, "wordcount.listing.json")
	if err := os.WriteFile(lf, lb, 0o600); err != nil {
		return err
	}
	pr.step("innovator delegated short grants to the dispatcher (software isolates, at most 10 minutes and one use each): entry %d", listing.Delegation)
	if d, err = nw.StartDispatcher(ctx, d.Name, []string{lf}); err != nil {
		return err
	}
	pr.step("dispatcher lists the program (it keeps no secret: no key, no plaintext) at %s", d.URL)

	// The consumer asks; the chosen provider dies once the consumer has
	// attested it.
	consumer, err := keys.Load(info.Keys["consumer"])
	if err != nil {
		return err
	}
	nameOf := map[string]string{}
	for _, n := range info.Nodes {
		nameOf[n.PlatformKey] = n.Name
	}
	var (
		mu     sync.Mutex
		killed string
		kerr   error
	)
	logf := func(format string, args ...any) {
		line := fmt.Sprintf(format, args...)
		pr.step("consumer: %s", line)
		mu.Lock()
		defer mu.Unlock()
		if killed != "" || !strings.Contains(line, "attested the isolate myself") {
			return
		}
		// The assignment now live names the provider to kill.
		open, err := lc.MarketOpen(ctx)
		if err != nil {
			kerr = err
			return
		}
		for _, r := range open.Requests {
			if r.Live != 0 && nameOf[r.Node] != "" {
				killed = r.Node
			}
		}
		if killed == "" {
			kerr = errors.New("no live assignment names a provider of the network")
			return
		}
		kerr = nw.Kill(nameOf[killed])
		pr.step("demo: killed provider %s (SIGKILL, as a crash) after the consumer attested it", nameOf[killed])
	}
	oc, err := dispatch.Submit(ctx, dispatch.RequestOptions{Dispatcher: d.URL, Ledger: info.LedgerURL, Key: consumer,
		ProgramSHA256: sum.SHA256, Sealed: sum.Digest, Requirement: "class == 'software'",
		Inputs: []dispatch.Input{{Name: "text", Data: text}}, Deadline: 5 * time.Minute, Logf: logf})
	if err != nil {
		return fmt.Errorf("demo: the request was not served: %w", err)
	}
	mu.Lock()
	k, ke := killed, kerr
	mu.Unlock()
	if ke != nil {
		return fmt.Errorf("demo: killing the chosen provider: %w", ke)
	}
	if k == "" {
		return errors.New("demo: no provider was killed: the run finished before the consumer attested it")
	}
	pr.step("consumer: result from %s (class %s, session %.8s…, token %d); run %d ms, CPU %d ms by the provider's report, %d ms observed; accounted in entry %d",
		nameOf[oc.Provider], oc.Class, oc.Session, oc.Token, oc.WallMillis, oc.CPUMillis, oc.ObservedMillis, oc.Accounted)

	// The checks.
	got := oc.Outputs["count.json"]
	if !jsonEqual(got, want) {
		return fmt.Errorf("demo: count.json is %s, want %s", got, want)
	}
	pr.step("consumer opened count.json %s (expected)", compactJSON(got))
	if oc.Provider == k || len(oc.Failovers) != 1 || oc.Failovers[0].Node != k {
		return fmt.Errorf("demo: want the run completed elsewhere after one failover from %s; provider %s, failovers %+v", nameOf[k], nameOf[oc.Provider], oc.Failovers)
	}
	pr.step("the run completed on %s after one failover from %s (%s)", nameOf[oc.Provider], nameOf[k], oc.Failovers[0].Reason)
	if err := checkMarketLedger(ctx, lc, sum.Digest, k, oc, pr, nameOf); err != nil {
		return err
	}
	consoleURL := ""
	for _, nd := range info.Nodes {
		if nd.PlatformKey == oc.Provider {
			consoleURL = nd.Console
		}
	}
	if err := checkMarketConsole(ctx, consoleURL, sum.Digest, k, oc); err != nil {
		return err
	}
	pr.step("console of %s shows the failover and the release: %smarket, %skeys/%s", nameOf[oc.Provider], consoleURL, consoleURL, sum.Digest)
	pr.step("all steps behaved; stopping the test network")
	return nil
}

// checkMarketLedger checks on the ledger that the dead provider's grant
// was revoked and that the key was released to the session that answered.
func checkMarketLedger(ctx context.Context, lc *lclient.Client, artifact, dead string, oc *dispatch.Outcome, pr *demoPrinter, nameOf map[string]string) error {
	grantNode := map[uint64]string{}
	revoked := map[uint64]bool{}
	released := false
	for from := uint64(0); ; {
		page, err := lc.Entries(ctx, from, 500)
		if err != nil {
			return fmt.Errorf("demo: reading the ledger: %w", err)
		}
		for _, e := range page.Entries {
			body := e.Signed.Entry.Body
			switch string(e.Signed.Entry.Kind) {
			case acl.KindGranted:
				if g, err := acl.DecodeGrant(body); err == nil && g.Artifact == artifact {
					grantNode[e.Index] = g.Grantee.Node
				}
			case acl.KindRevoked:
				if r, err := acl.DecodeRevocation(body); err == nil && r.Grant != nil {
					revoked[*r.Grant] = true
				}
			case acl.KindKeyReleased:
				if r, err := acl.DecodeRelease(body); err == nil && r.Artifact == artifact && r.Node == oc.Provider && r.Session == oc.Session {
					released = true
				}
			}
		}
		from += uint64(len(page.Entries))
		if len(page.Entries) == 0 || from >= page.Size {
			break
		}
	}
	var deadRevoked, liveRevoked, liveGranted bool
	for idx, node := range grantNode {
		switch node {
		case dead:
			deadRevoked = deadRevoked || revoked[idx]
		case oc.Provider:
			liveGranted = true
			liveRevoked = liveRevoked || revoked[idx]
		}
	}
	if !deadRevoked {
		return fmt.Errorf("demo: the grant to the dead provider %s was not revoked", nameOf[dead])
	}
	if !liveGranted || liveRevoked {
		return fmt.Errorf("demo: the provider that answered, %s, holds no live grant (granted %v, revoked %v)", nameOf[oc.Provider], liveGranted, liveRevoked)
	}
	pr.step("ledger: the grant to %s is revoked; %s's grant stands", nameOf[dead], nameOf[oc.Provider])
	if !released {
		return fmt.Errorf("demo: no key.released entry for the session that answered")
	}
	pr.step("ledger: the broker released the content key to session %.8s… on %s only after recording key.released", oc.Session, nameOf[oc.Provider])
	return nil
}

// checkMarketConsole reads the console of the node that answered, as a
// viewer would: its market page counts the dead provider's failure and its
// key-release page for the artifact shows the dead provider's grant
// revoked and the release to the session that answered. The console's
// explorer follows the ledger, so this waits (bounded) for it to catch up.
func checkMarketConsole(ctx context.Context, base, artifact, dead string, oc *dispatch.Outcome) error {
	if base == "" {
		return errors.New("demo: the provider that answered has no console")
	}
	return awaitConsole(ctx, base, func(ctx context.Context) error { return marketConsoleShows(ctx, base, artifact, dead, oc) })
}

// awaitConsole calls check until it passes, for up to 30 s: a console's
// explorer follows the ledger, a moment behind it.
func awaitConsole(ctx context.Context, base string, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		err := check(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("demo: console %s: %w", base, err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func marketConsoleShows(ctx context.Context, base, artifact, dead string, oc *dispatch.Outcome) error {
	get := func(p string, v any) error { _, err := consoleGet(ctx, base, p, v); return err }
	var keys struct {
		Grants []struct {
			Grantee   acl.Grantee `json:"grantee"`
			RevokedBy uint64      `json:"revoked_by"`
			Releases  int         `json:"releases"`
		} `json:"grants"`
		Releases []acl.Release `json:"releases"`
	}
	if err := get("api/keys/"+artifact, &keys); err != nil {
		return err
	}
	var deadRevoked, released bool
	for _, g := range keys.Grants {
		if g.Grantee.Node == dead && g.RevokedBy != 0 {
			deadRevoked = true
		}
	}
	for _, r := range keys.Releases {
		if r.Node == oc.Provider && r.Session == oc.Session {
			released = true
		}
	}
	if !deadRevoked || !released {
		return fmt.Errorf("the key-release page shows the dead provider's grant revoked: %v, the release to the session that answered: %v", deadRevoked, released)
	}
	var market struct {
		Records *struct {
			Records []struct {
				Node     string `json:"node"`
				Runs     uint64 `json:"runs"`
				Failures uint64 `json:"failures"`
			} `json:"records"`
		} `json:"provider_records"`
		RecordsError string `json:"provider_records_error"`
	}
	if err := get("api/market", &market); err != nil {
		return err
	}
	if market.Records == nil {
		return fmt.Errorf("the market page has no providers' records: %s", market.RecordsError)
	}
	var deadFailed, liveRan bool
	for _, r := range market.Records.Records {
		deadFailed = deadFailed || r.Node == dead && r.Failures > 0
		liveRan = liveRan || r.Node == oc.Provider && r.Runs > 0
	}
	if !deadFailed || !liveRan {
		return fmt.Errorf("the market page counts the dead provider's failure: %v, the run of the one that answered: %v", deadFailed, liveRan)
	}
	// The pages themselves render (the browser tests check their markup).
	for _, p := range []string{"market", "keys", "keys/" + artifact} {
		if err := get(p, nil); err != nil {
			return err
		}
	}
	return nil
}

// consoleGet reads base+p from a node's console: into v as JSON when v
// is not nil; the body is returned either way.
func consoleGet(ctx context.Context, base, p string, v any) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", base+p, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %.300s", p, resp.Status, b)
	}
	if v != nil {
		return b, json.Unmarshal(b, v)
	}
	return b, nil
}

// wordcountExample is the wordcount example the sealed-program demos run:
// the program, its input "text" and the expected "count.json".
func wordcountExample() (ex *examples.Program, text, want []byte, err error) {
	if ex, err = examples.Lookup("wordcount"); err != nil {
		return nil, nil, nil, err
	}
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
	return ex, text, want, nil
}
