package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
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
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/console"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
)

func newDemoCmd() *cobra.Command {
	var cacheDir, consoleAddr string
	var verbose bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a three-party private set intersection on one machine",
		Long: `demo plays, in one process, the whole delegated-computation protocol against
a real node listening on 127.0.0.1 (TLS, attested sessions, jailed isolate):

  alice   provides the program (psi-sum.wasm, pinned by SHA-256 in the policy)
  bob     provides customers.csv
  carol   provides purchases.csv
  dave    reads result.json: how many customers bought and how much they spent

Each party attests the session against the shared policy before sending
anything; inputs travel HPKE-sealed to the session key; the result is sealed
to dave alone. The node records every step on an embedded ledger (hashes,
never data); dave then checks through the ledger's HTTP API that the
checkpoint is cosigned, that the result.committed entry is included in it,
and that its output hashes are signed by the session key he attested. The demo prints each step with its timing and checks the
answer against the expected one. The node's data lives in a temporary
directory erased at exit; compiled programs are cached in --cache so that
later runs start faster.

With --console the node stays up after the demo, serving its web console
(docs/console.md) on a loopback port until Ctrl-C: the session, its steps on
the ledger, and its receipt, which the page verifies in the browser against
the ledger state dave verified (its path is printed: paste the file's
content as the trust root).

Exit status: 0 the answer is correct; 1 any step failed or the answer is wrong.`,
		Example: `  cloister demo
  cloister demo --verbose      # also show the node's log
  cloister demo --console      # then open the printed URL; Ctrl-C stops`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cacheDir == "" {
				cacheDir = defaultDemoCache()
			}
			var con *demoConsole
			if consoleAddr != "" {
				if err := checkConsoleAddr(consoleAddr, false); err != nil {
					return usageError("demo: %v", err)
				}
				ctx, stop := signalContext(cmd)
				defer stop()
				cmd.SetContext(ctx)
				con = &demoConsole{addr: consoleAddr}
			}
			if err := runDemoWith(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), cacheDir, verbose, con); err != nil {
				return failure(err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&consoleAddr, "console", "", "afterwards keep the node up and serve its console on this loopback address until Ctrl-C")
	cmd.Flags().Lookup("console").NoOptDefVal = "127.0.0.1:0"
	cmd.Flags().StringVar(&cacheDir, "cache", "", "directory for the compilation cache (default: the user cache directory)")
	cmd.Flags().BoolVar(&verbose, "verbose", false, "show the node's log on standard error")
	cmd.AddCommand(newDemoSealedCmd(), newDemoMarketCmd(), newDemoFederationCmd(), newDemoPieeCmd())
	return cmd
}

func defaultDemoCache() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "cloister", "demo")
	}
	return filepath.Join(os.TempDir(), "cloister-demo-cache")
}

// demoParty is one principal of the demo.
type demoParty struct {
	id  string
	key *keys.PrivateKey
}

// demoPrinter prints steps with the time each took.
type demoPrinter struct {
	w     io.Writer
	start time.Time
	last  time.Time
}

func (p *demoPrinter) step(format string, args ...any) {
	now := time.Now()
	fmt.Fprintf(p.w, "%7.1f ms  %s\n", float64(now.Sub(p.last).Microseconds())/1000, fmt.Sprintf(format, args...))
	p.last = now
}

func (p *demoPrinter) note(format string, args ...any) {
	fmt.Fprintf(p.w, "            %s\n", fmt.Sprintf(format, args...))
}

// demoConsole asks the demo to serve the node's console afterwards, on
// addr, until ctx ends; ready, if set, is called once it serves.
type demoConsole struct {
	addr  string
	ready func(demoConsoleInfo)
}

// demoConsoleInfo is where the demo's console is and what to look at.
type demoConsoleInfo struct {
	URL, NodeURL, Session, LedgerState string
	PlatformKey                        string
	// Ledger appends to the demo's ledger (the tests write hostile
	// entries for the console to show).
	Ledger ledger.Appender
}

// runDemo plays the scenario.
func runDemo(ctx context.Context, out, errOut io.Writer, cacheDir string, verbose bool) error {
	return runDemoWith(ctx, out, errOut, cacheDir, verbose, nil)
}

// runDemoWith plays the scenario and, with con, serves the console after.
func runDemoWith(ctx context.Context, out, errOut io.Writer, cacheDir string, verbose bool, con *demoConsole) error {
	pr := &demoPrinter{w: out, start: time.Now(), last: time.Now()}
	ex, err := examples.Lookup("psi-sum")
	if err != nil {
		return err
	}
	inputs := map[string][]byte{}
	for _, f := range ex.Inputs {
		inputs[f.Name] = f.Data
	}
	var want []byte
	for _, f := range ex.Outputs {
		if f.Name == "result.json" {
			want = f.Data
		}
	}
	if inputs["customers.csv"] == nil || inputs["purchases.csv"] == nil || want == nil {
		return errors.New("demo: the psi-sum example is incomplete")
	}

	// The node: a temporary data directory, a persistent compilation cache.
	dataDir, err := os.MkdirTemp("", "cloister-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dataDir)
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return fmt.Errorf("demo: cache directory: %w", err)
	}
	rt, err := isolate.New(ctx, isolate.Options{DataDir: cacheDir, WarmWorkers: 1})
	if err != nil {
		return fmt.Errorf("demo: isolate runtime: %w", err)
	}
	defer rt.Close()
	logw := io.Discard
	if verbose {
		logw = errOut
	}
	logger := slog.New(slog.NewTextHandler(logw, nil))
	lg, err := ledger.OpenEmbedded(ctx, filepath.Join(dataDir, "ledger"), ledger.EmbeddedOptions{Logger: logger})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer lg.Close()
	n, err := node.New(ctx, node.Options{DataDir: dataDir, Runner: rt, NoSync: true,
		Ledger: lg, LedgerName: ledger.Origin(lg.ChainID()), Logger: logger})
	if err != nil {
		return err
	}
	defer n.Close()
	reg, _ := n.RegistrationIndex()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		if err := n.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Fprintln(errOut, "demo: node:", err)
		}
	}()
	url := "https://" + ln.Addr().String()
	pr.step("node listening on %s (isolate class %s)", url, n.Class())
	pr.note("platform key %s", keys.FormatSigningKey(n.PlatformKey()))
	pr.note("embedded ledger %s: node.registered at #%d", ledger.Origin(lg.ChainID()), reg)

	// The parties and their policy.
	parties := map[string]*demoParty{}
	for _, id := range []string{"alice", "bob", "carol", "dave"} {
		k, err := keys.Generate()
		if err != nil {
			return err
		}
		parties[id] = &demoParty{id: id, key: k}
	}
	doc, err := demoPolicy(parties, ex.Wasm, keys.FormatSigningKey(n.PlatformKey()))
	if err != nil {
		return err
	}
	pol, err := policy.Parse(doc)
	if err != nil {
		return fmt.Errorf("demo: policy: %w", err)
	}
	pr.step("keys for alice (program), bob and carol (data), dave (result); policy %s", pol.HashHex()[:16])

	c, err := client.Dial(ctx, url, client.WithPlatformKeys(n.PlatformKey()))
	if err != nil {
		return err
	}
	defer c.Close()
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		return err
	}
	pr.step("create: session %s", id)

	// Each party attests on its own before it sends anything.
	sessions := map[string]*client.AttestedSession{}
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		as, err := c.Attest(ctx, id, pol)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer as.CloseIdleConnections()
		sessions[name] = as
	}
	cl := sessions["dave"].Claims()
	pr.step("attest: 4 parties verified fresh evidence (class %s, runtime %s…)", cl.Class, hex.EncodeToString(cl.Measurement)[:16])
	pr.note("evidence binds policy hash, session TLS key sha256:%s…, HPKE key, each party's nonce", sessions["dave"].TLSKeyHash()[:16])
	for _, w := range cl.Warnings {
		pr.note("warning: %s", w)
	}

	if _, err := sessions["alice"].UploadProgram(ctx, parties["alice"].key, "psi-sum.wasm", ex.Wasm); err != nil {
		return err
	}
	pr.step("provision: alice sealed and uploaded psi-sum.wasm (%d KiB, sha256 %s…)", len(ex.Wasm)>>10, sha256hex(ex.Wasm)[:16])
	if _, err := sessions["bob"].UploadInput(ctx, parties["bob"].key, "customers.csv", inputs["customers.csv"]); err != nil {
		return err
	}
	pr.step("provision: bob sealed and uploaded customers.csv (%d bytes)", len(inputs["customers.csv"]))
	if _, err := sessions["carol"].UploadInput(ctx, parties["carol"].key, "purchases.csv", inputs["purchases.csv"]); err != nil {
		return err
	}
	pr.step("provision: carol sealed and uploaded purchases.csv (%d bytes); the run starts", len(inputs["purchases.csv"]))

	wctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	st, err := sessions["dave"].Wait(wctx)
	if err != nil {
		return err
	}
	if !client.Terminal(st.State) || st.Report == nil {
		return fmt.Errorf("run: session is %s: %s", stateName(st.State), st.Reason)
	}
	pr.step("run: %s, exit %d, %d ms in the isolate; session %s", st.Report.Outcome, st.Report.ExitCode, st.Report.WallMs, stateName(st.State))
	if len(st.Report.Protections) > 0 {
		pr.note("isolation: %v", st.Report.Protections)
	}
	if st.Reason != "" {
		return fmt.Errorf("run: %s", st.Reason)
	}

	got, err := sessions["dave"].Result(wctx, parties["dave"].key, "result.json")
	if err != nil {
		return err
	}
	pr.step("result: dave fetched result.json sealed to his key and opened it")
	var compact bytes.Buffer
	if json.Compact(&compact, got) != nil {
		compact.Reset()
		compact.Write(bytes.TrimSpace(got))
	}
	pr.note("%s", compact.Bytes())
	if !bytes.Equal(got, want) {
		return fmt.Errorf("result: got %q, want %q", got, want)
	}
	var r struct {
		N   int   `json:"intersection_size"`
		Sum int64 `json:"sum"`
	}
	if err := json.Unmarshal(got, &r); err == nil {
		pr.note("correct: %d customers bought, spending %d cents in total; no party saw another's rows", r.N, r.Sum)
	}
	if err := demoVerifyLedger(wctx, pr, lg, dataDir, n, sessions["dave"], pol); err != nil {
		return err
	}
	if err := sessions["dave"].Close(ctx, parties["dave"].key); err != nil {
		return err
	}
	pr.step("close: dave erased the session")
	fmt.Fprintf(out, "total %.2f s\n", time.Since(pr.start).Seconds())
	if con == nil {
		return nil
	}
	lc, err := console.LedgerClient(lg.Handler())
	if err != nil {
		return err
	}
	curl, stop, err := serveConsole(ctx, con.addr, n, lc, nil, logger)
	if err != nil {
		return err
	}
	defer stop()
	state := filepath.Join(dataDir, "ledger-client-state.json")
	fmt.Fprintf(out, "console:    %s/ui/sessions/%s/receipt\n", curl, id)
	fmt.Fprintf(out, "trust root: %s (the ledger state dave verified: paste its content on the receipt page)\n", state)
	fmt.Fprintf(out, "the node and its console run until Ctrl-C\n")
	if con.ready != nil {
		con.ready(demoConsoleInfo{URL: curl, NodeURL: url, Session: id, LedgerState: state, PlatformKey: keys.FormatSigningKey(n.PlatformKey()), Ledger: lg})
	}
	<-ctx.Done()
	fmt.Fprintln(out, "stopping")
	return nil
}

// demoVerifyLedger checks, as dave could from anywhere with the ledger's
// public API, that the node committed the result to the ledger: the
// checkpoint is cosigned by the validators, the result.committed entry is
// included in it and signed by the node's platform key, and its output
// hashes are signed by the session key dave attested.
func demoVerifyLedger(ctx context.Context, pr *demoPrinter, lg *ledger.Embedded, dataDir string, n *node.Node, as *client.AttestedSession, pol *policy.Policy) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := httpguard.NewServer(lg.Handler(), httpguard.Limits{}, nil, nil)
	go srv.Serve(httpguard.Listen(ln, httpguard.Limits{}, nil))
	defer srv.Close()
	lc, err := lclient.New("http://" + ln.Addr().String())
	if err != nil {
		return err
	}
	st, err := as.Status(ctx)
	if err != nil {
		return err
	}
	var idx uint64
	for _, e := range st.Events {
		if e.Kind == node.EventRunFinished {
			idx = e.LedgerIndex
		}
	}
	if idx == 0 {
		return errors.New("ledger: the node did not record the finished run")
	}
	// The checkpoint trails the commit by a block or two: wait for one
	// that covers the entry (bounded).
	var res *lclient.VerifyResult
	statePath := filepath.Join(dataDir, "ledger-client-state.json")
	deadline := time.Now().Add(10 * time.Second)
	for {
		res, err = lc.Verify(ctx, statePath, &idx)
		var apiErr *lclient.APIError
		if err == nil || !(errors.Is(err, verify.ErrNotIncluded) || errors.As(err, &apiErr) && apiErr.Code == "not_checkpointed") || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("ledger: verifying entry %d: %w", idx, err)
	}
	se := res.Entry.Signed
	if se.Entry.Kind != ledger.KindResultCommitted || se.Entry.Submitter != protocol.FormatEd25519Key(n.PlatformKey()) {
		return fmt.Errorf("ledger: entry %d is %s by %s, want result.committed by the node's platform key", idx, se.Entry.Kind, se.Entry.Submitter)
	}
	rc, err := client.ParseResultCommitment(se.Entry.Body)
	if err != nil {
		return fmt.Errorf("ledger: entry %d: %w", idx, err)
	}
	if rc.Session != as.ID() || rc.PolicyHash != pol.HashHex() {
		return fmt.Errorf("ledger: entry %d commits session %s under policy %s, want %s under %s", idx, rc.Session, rc.PolicyHash, as.ID(), pol.HashHex())
	}
	if rc.Outputs["result.json"]["dave"] == "" {
		return fmt.Errorf("ledger: entry %d commits no envelope of result.json for dave", idx)
	}
	if err := rc.Verify(as.SessionKey()); err != nil {
		return fmt.Errorf("ledger: %w", err)
	}
	cp := res.Checkpoint
	pr.step("ledger: result.committed #%d is included in the checkpoint of size %d (root %s…), cosigned by validators with %d of %d votes",
		idx, cp.Size, hex.EncodeToString(cp.Root[:])[:16], cp.SignedPower, cp.TotalPower)
	pr.note("its output hashes are signed by the session key dave attested (result.json for dave: envelope sha256 %s…)", rc.Outputs["result.json"]["dave"][:16])
	return nil
}

func sha256hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// demoPolicy writes the demo's policy document from the policy package's
// own types, so that it has exactly the fields policy.Parse reads.
func demoPolicy(p map[string]*demoParty, wasm []byte, platformKey string) ([]byte, error) {
	principal := func(id string, reader bool, role policy.Role) policy.Principal {
		pub := p[id].key.Public()
		pr := policy.Principal{ID: id, SigningKey: pub.SigningString(), Roles: []policy.Role{role}}
		if reader {
			pr.SealingKey = pub.SealingString()
		}
		return pr
	}
	return json.MarshalIndent(&policy.Policy{
		Version: policy.Version,
		Name:    "demo-psi-sum",
		Principals: []policy.Principal{
			principal("alice", false, policy.RoleProgramProvider),
			principal("bob", false, policy.RoleDataProvider),
			principal("carol", false, policy.RoleDataProvider),
			principal("dave", true, policy.RoleResultReader),
		},
		Programs: []policy.Program{{Name: "psi-sum.wasm", SHA256: sha256hex(wasm), Provider: "alice"}},
		Inputs: []policy.Input{
			{Name: "customers.csv", Provider: "bob"},
			{Name: "purchases.csv", Provider: "carol"},
		},
		Outputs:       []policy.Output{{Name: "result.json", Readers: []string{"dave"}}},
		Isolates:      []policy.Isolate{{Class: "software", PlatformKeys: []string{platformKey}}},
		Limits:        policy.Limits{Memory: "256MiB", Timeout: "2m", MaxOutput: "1MiB"},
		Deterministic: true,
		Expires:       time.Now().Add(time.Hour).UTC().Truncate(time.Second),
	}, "", "  ")
}
