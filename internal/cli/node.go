package cli

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/tpm"
	"github.com/cloisterhq/cloister/blob/server"
	"github.com/cloisterhq/cloister/console"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/backup"
	"github.com/cloisterhq/cloister/internal/bytesize"
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/node"
)

func newNodeCmd() *cobra.Command {
	var (
		listen, dataDir, class, tpmSpec   string
		ledgerURL, ledgerListen           string
		logs                              logFlags
		grace                             time.Duration
		blobListen, blobCache             string
		pushKeys                          []string
		blobLim                           storeLimitFlags
		noLedger                          bool
		warm                              int
		maxUpload, maxInflight            string
		memoryLimit                       string
		maxChunk, maxStream, streamOutput string
		maxConns, maxConnsPerAddr         int
		adm                               admissionFlags
		consoleAddr                       string
		consolePublic, federate           bool
		consoleHosts                      []string
		prov                              providerFlags
		pf                                pieeNodeFlags
		replicaFaults                     node.ReplicaFaults
	)
	cmd := &cobra.Command{
		Use:   "node --listen ADDR --data DIR",
		Short: "Run a node: host attested sessions on one TLS port",
		Long: `node serves the session API (ConnectRPC over TLS, HTTP/2) on ADDR. Every
session has its own TLS and HPKE keys; clients reach a session with the TLS
server name "<session-id>.session.cloister" on the same port, and anything
else reaches the node itself.

On first start it creates DIR/platform.key. Its public signing key is what
a policy lists under isolates[class=software].platform_keys:

  cloister key public DIR/platform.key --json

Session state is kept in DIR/sessions, sealed with a key derived from the
platform key; a restart keeps finished results and runs again any session
that was running. Compiled programs are cached in DIR/wazero-cache.

The node registers itself on a ledger (a node.registered entry signed by
its platform key, with evidence from its attester; once, remembered in
DIR/ledger-registration.json) and records every session step there: hashes,
principal ids and signatures, never programs, inputs or results. By default
the ledger is embedded: a single in-process validator with its data in
DIR/ledger. --ledger URL records on an external ledger (a consortium's
validators, 'cloister ledger start') instead; --no-ledger records nothing.
A step's entry is saved with the step until the ledger confirms it, so a
restart sends again, once, whatever a crash or an outage kept off the
ledger (entry numbers are reserved in DIR/ledger-numbers).

A provider node is findable on the ledger (docs/marketplace.md):
--endpoint names the URL others reach it at and --organisation the
consortium member that runs it, both in its node.registered entry (a later
start with another --endpoint moves it; the organisation stays). With
--offer-ttl it offers its capacity: an offer entry with its class, the
digest of its evidence and --offer-memory/-cores/-concurrency/-price/-region,
renewed every third of the TTL while it runs, no longer once it drains.

--ledger-listen ADDR serves the embedded ledger's HTTP API on a loopback
address, over plain HTTP: everything it serves is public, and clients
('cloister ledger verify', the Go client) check checkpoint signatures and
proofs themselves rather than trusting the server. The URL is logged.

With --isolate-class tpm the node quotes with an attestation key of the TPM
named by --tpm (a device, or tcp:HOST:PORT of a swtpm server) and writes its
public key to DIR/tpm-ak.pem: a policy lists that PEM block under
isolates[class=tpm].platform_keys, with the PCR digest under measurements.

Programs run in jailed workers: cloister-isolate when it lies next to this
binary (CGO_ENABLED=0 go build -o DIR ./cmd/cloister-isolate), which starts
several times faster, else this binary re-executed; the log says which.
The garbage collector runs with GOGC=400 unless GOGC is set, under a soft
memory limit of --memory-limit (96MiB; 0 for none) unless GOMEMLIMIT is
set: above it the collector runs more often rather than the node growing.
Raise it for a node that holds many sessions at once.

Who may create sessions is --admission: open (the default) admits anyone,
counting unsigned requests by IP address, and serves only on loopback unless
--allow-open; allow-list admits the creator keys given with --admit-key;
token admits keys that present an admission token signed by a
--token-issuer key ('cloister admission token'); consortium admits the keys
the ledger records as members ('cloister ledger member admit'). In every
mode, each creator and all of them together are capped in sessions held
(--max-sessions, --max-sessions-per-creator), bytes stored (--max-stored,
--max-stored-per-creator) and sessions created per second (--create-rate,
--create-rate-per-creator). The node stores each policy in canonical form.
It erases sessions whose policy expired and those that took no step for
--session-idle. Below --min-free free space on the data directory's file
system it refuses new sessions and uploads, and keeps serving the rest.

Every request is bounded before the node works on it: each RPC has its own
size limit, checked before its message is decoded (a few KiB for node info,
status and the session calls, the policy limit for create, --max-upload for
uploads); only create accepts a compressed request, and stops inflating it
past 16 times its size; a request body must keep arriving (10 s, then at
least 64 KiB/s) or it is cut off; request bodies in flight are bounded in
total by --max-inflight; at most --max-conns connections are open, at most
--max-conns-per-addr from one address. A refusal names the limit and the
flag that raises it. /metrics serves Prometheus metrics (requests,
refusals by rule, sessions, runs, connections).

--console ADDR serves the node's web console (docs/console.md) on ADDR over
plain HTTP: pages under /ui/, the same data as JSON under /ui/api/. It is
off by default and read-only; it shows no secret and no data, but it does
show sessions, their policies and the ledger, so it binds only to loopback
unless --console-public; --console-host adds the host names it answers to
(it refuses others, against DNS rebinding).

Logs go to standard error, as text or, with --log-format json, one JSON
object a line. On the same port the node serves /healthz (the process
answers), /readyz (200 only when its attester produces evidence, the ledger
answers and is not catching up, and it is not stopping; 503 and the reasons
otherwise) and /v1/node/status (what 'cloister status' shows).

SIGINT or SIGTERM stops the node gracefully: it admits no new session or
upload and waits up to --shutdown-grace for runs in progress, then stops;
runs still going are recorded as interrupted (an event on the ledger) and
run again at the next start. Finished results and every session's state
survive the stop. A second signal stops at once.

Exit status: 0 stopped by a signal; 1 the node could not start or failed;
2 bad usage.`,
		Example: `  cloister node --listen 127.0.0.1:7443 --data ./node-data
  cloister node --listen 0.0.0.0:7443 --data ./node-data --admission allow-list --admit-key ed25519:AAAA...
  cloister node --listen 0.0.0.0:7443 --data ./node-data --admission token --token-issuer ed25519:BBBB...
  cloister node --data ./node-data --ledger-listen 127.0.0.1:7480
  cloister node --data ./node-data --console 127.0.0.1:7490
  cloister node --data ./node-data --ledger http://10.0.0.5:26680
  cloister node --data ./node-data --isolate-class tpm --tpm tcp:127.0.0.1:2321
  cloister node --data ./node-data --ledger http://127.0.0.1:7480 --endpoint https://127.0.0.1:7443 \
    --organisation ed25519:CCCC... --offer-ttl 60s --offer-memory 4GiB --offer-cores 2 --offer-concurrency 4
  cloister key public ./node-data/platform.key --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return usageError("node: --data DIR is required")
			}
			log, err := logs.logger("node", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if grace < 0 || grace > time.Hour {
				return usageError("node: --shutdown-grace %s: want 0 to 1h", grace)
			}
			if c := attest.Class(class); c != attest.ClassSoftware && c != attest.ClassTPM {
				return usageError("node: --isolate-class %q: want software or tpm", class)
			}
			if warm < 0 || warm > 64 {
				return usageError("node: --warm-workers %d: want 0 to 64", warm)
			}
			if noLedger && (ledgerURL != "" || ledgerListen != "") {
				return usageError("node: --no-ledger excludes --ledger and --ledger-listen")
			}
			if ledgerURL != "" && ledgerListen != "" {
				return usageError("node: --ledger-listen serves the embedded ledger; with --ledger URL the external ledger serves its own API")
			}
			if ledgerListen != "" {
				if err := checkLoopback(ledgerListen); err != nil {
					return usageError("node: --ledger-listen %q: %v", ledgerListen, err)
				}
			}
			if consoleAddr != "" {
				if err := checkConsoleAddr(consoleAddr, consolePublic); err != nil {
					return usageError("node: %v", err)
				}
			} else if consolePublic || len(consoleHosts) > 0 {
				return usageError("node: --console-public and --console-host need --console ADDR")
			}
			offer, err := prov.parse(noLedger)
			if err != nil {
				return err
			}
			if err := pf.check(noLedger); err != nil {
				return err
			}
			limits, err := nodeLimits(maxUpload, maxInflight, maxChunk, maxStream, streamOutput, maxConns, maxConnsPerAddr)
			if err != nil {
				return err
			}
			admission, err := adm.parse(noLedger)
			if err != nil {
				return err
			}
			if addr, err := net.ResolveTCPAddr("tcp", listen); err != nil {
				return usageError("node: --listen %q: %v", listen, err)
			} else if err := node.CheckListen(addr, admission); err != nil {
				return usageError("%v", err)
			}
			cacheBytes, err := bytesize.Parse(blobCache)
			if err != nil || cacheBytes <= 0 {
				return usageError("node: --blob-cache %q: want a size such as 16GiB", blobCache)
			}
			var blobStore *server.Options
			if blobListen != "" {
				o, err := blobLim.options(filepath.Join(dataDir, "blobstore"), pushKeys)
				if err != nil {
					return usageError("node: %v", err)
				}
				blobStore = &o
			} else if len(pushKeys) > 0 {
				return usageError("node: --push-key needs --blob-listen")
			}
			memLimit, err := bytesize.Parse(memoryLimit)
			if err != nil || memLimit < 0 {
				return usageError("node: --memory-limit %q: want a size such as 96MiB, or 0 for none", memoryLimit)
			}
			log.Info("garbage collector", "setting", node.ConfigureGC(memLimit))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// Bind first: a port in use must fail before anything is
			// created in the data directory.
			ln, err := listenTCP(listen, "--listen")
			if err != nil {
				return failure(fmt.Errorf("node: %w", err))
			}
			defer ln.Close()
			// One process at a time in a data directory; 'backup create'
			// waits for it to stop.
			if err := os.MkdirAll(dataDir, 0o700); err != nil {
				return failure(fmt.Errorf("node: data directory: %w", err))
			}
			unlock, err := backup.Lock(dataDir)
			if err != nil {
				return failure(fmt.Errorf("node: %w", err))
			}
			defer unlock()
			var nodeLedgerReader *lclient.Client
			opts := node.Options{DataDir: dataDir, IsolateClass: attest.Class(class), WarmWorkers: warm, Logger: log, Limits: limits,
				Admission: admission, BlobCache: cacheBytes, Endpoint: prov.endpoint, Organisation: prov.org, Offer: offer,
				ReplicaFaults: replicaFaults}
			if !noLedger {
				nl, err := openNodeLedger(ctx, dataDir, ledgerURL, ledgerListen, log)
				if err != nil {
					return failure(err)
				}
				defer nl.close()
				opts.Ledger, opts.LedgerName, opts.LedgerURL, opts.LedgerStatus = nl.app, nl.name, ledgerURL, nl.status
				opts.Replicas = nl.read
				opts.Grants = nl.read // grants and artifacts of sealed programs
				nodeLedgerReader = nl.read
				if admission.Mode == node.AdmitConsortium {
					opts.Admission.Members = nl.members
				}
			}
			var fed *nodeFederation
			if federate {
				if fed, err = newNodeFederation(noLedger, prov.org, nodeLedgerReader); err != nil {
					return usageError("node: %v", err)
				}
				opts.HostCalls = fed.hostCalls()
				opts.SettleHostCalls = fed.caller.SettleRun
			}
			if attest.Class(class) == attest.ClassTPM {
				a, closeTPM, err := nodeTPMAttester(tpmSpec, dataDir, log)
				if err != nil {
					return failure(err)
				}
				defer closeTPM()
				opts.Attester = a
			}
			n, err := node.New(ctx, opts)
			if err != nil {
				return failure(err)
			}
			defer n.Close()
			if fed != nil {
				if err := fed.mount(n, dataDir, log); err != nil {
					return failure(fmt.Errorf("node: %w", err))
				}
				defer fed.holder.Close()
			}
			if err := pf.start(ctx, n, nodeLedgerReader, log); err != nil {
				return failure(err)
			}
			log.Info("node listening", "url", "https://"+ln.Addr().String(), "isolate_class", string(n.Class()),
				"platform_key", keys.FormatSigningKey(n.PlatformKey()), "data", dataDir)
			errc := make(chan error, 1)
			go func() { errc <- n.Serve(ln) }()
			if consoleAddr != "" {
				var lc *lclient.Client
				if opts.Ledger != nil {
					lc = nodeLedgerReader
				}
				var sections []console.Section
				if fed != nil {
					sections = append(sections, fed.holder.ConsoleSection()) // the plans it received
				}
				_, stopConsole, err := serveConsole(ctx, consoleAddr, n, lc, consoleHosts, log, sections...)
				if err != nil {
					return failure(fmt.Errorf("node: %w", err))
				}
				defer stopConsole()
			}
			if blobStore != nil {
				stopStore, err := serveNodeBlobStore(blobListen, *blobStore, log)
				if err != nil {
					return err
				}
				defer stopStore()
			}
			select {
			case err := <-errc:
				if !errors.Is(err, http.ErrServerClosed) {
					return failure(fmt.Errorf("node: %w", err))
				}
			case <-ctx.Done():
				drainNode(n, grace, log)
				// The deferred Close ends long polls, waits up to 5 s
				// for requests in flight and records the runs still in
				// progress as interrupted, to be run again at the next
				// start.
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&blobListen, "blob-listen", "", "also serve the node's blob store (plain HTTP, signed writes; docs/storage.md) on this address, e.g. 127.0.0.1:7444")
	f.StringArrayVar(&pushKeys, "push-key", nil, "with --blob-listen: signing key allowed to write blobs: ed25519:… or a public-key FILE, optionally =QUOTA (repeatable)")
	blobLim.register(cmd)
	f.StringVar(&blobCache, "blob-cache", "16GiB", "bytes of stored inputs (fetched by digest for policies' from) kept in DIR/blobs; the least recently used go first, never one a running session reads")
	f.StringVar(&listen, "listen", "127.0.0.1:7443", "TCP address to serve TLS on")
	f.StringVar(&dataDir, "data", "", "data directory (platform key, sessions, compilation cache)")
	f.StringVar(&class, "isolate-class", "software", "isolate class to attest as")
	f.StringVar(&tpmSpec, "tpm", "/dev/tpmrm0", "with --isolate-class tpm: TPM device path or tcp:HOST:PORT of a swtpm server")
	f.IntVar(&warm, "warm-workers", 2, "jailed workers kept started and waiting for a run")
	f.StringVar(&ledgerURL, "ledger", "", "record on the external ledger at this API URL instead of the embedded one")
	f.StringVar(&ledgerListen, "ledger-listen", "", "serve the embedded ledger's public HTTP API on this loopback address (plain HTTP; clients verify what it serves)")
	f.BoolVar(&noLedger, "no-ledger", false, "run without a ledger: nothing is registered or recorded")
	logs.add(f)
	f.DurationVar(&grace, "shutdown-grace", 30*time.Second, "at SIGTERM or SIGINT, how long runs in progress may take to finish while no new work is admitted; the rest are recorded as interrupted and run again at the next start (a second signal stops at once)")
	f.StringVar(&maxUpload, "max-upload", "64MiB", "largest sealed program or input accepted in one upload")
	f.StringVar(&maxChunk, "max-chunk", "4MiB", "largest chunk of a streamed upload accepted in one request")
	f.StringVar(&maxStream, "max-stream", "64GiB", "largest sealed program or input accepted as a streamed upload (the creator's stored-bytes quota applies too)")
	f.StringVar(&streamOutput, "stream-output", "16MiB", "outputs of at least this size are kept as one sealed file that readers fetch in chunks, not as an envelope per reader")
	f.StringVar(&memoryLimit, "memory-limit", "96MiB", "soft limit on the node's memory (the Go runtime's; GOMEMLIMIT overrides it): above it the garbage collector runs more often; 0 for none")
	f.StringVar(&maxInflight, "max-inflight", "512MiB", "request bodies read and handled at once, in total; more are refused until some finish")
	f.IntVar(&maxConns, "max-conns", httpguard.DefaultLimits.MaxConns, "connections open at once; more are closed at accept")
	f.IntVar(&maxConnsPerAddr, "max-conns-per-addr", httpguard.DefaultLimits.MaxConnsPerAddr, "connections open at once from one IP address (raise it behind a proxy or NAT)")
	prov.register(f)
	f.BoolVar(&federate, "federation", false, "answer calls of the organisation's published models on its local datasets, and let sessions' programs call models (host call cloister.model.call/v1); needs a ledger and --organisation (docs/federation.md)")
	pf.register(f)
	f.BoolVar(&replicaFaults.Corrupt, "replica-corrupt", false, "FAULT INJECTION: commit a wrong result digest for replicated sessions, to show that readers refuse it")
	f.BoolVar(&replicaFaults.ReleaseEarly, "replica-release-early", false, "FAULT INJECTION: release replicated sessions' results before the replicas agree, to show that readers refuse them")
	f.MarkHidden("replica-corrupt")
	f.MarkHidden("replica-release-early")
	f.StringVar(&consoleAddr, "console", "", "serve the web console (read-only, plain HTTP) on this address, e.g. 127.0.0.1:7490; off by default")
	f.BoolVar(&consolePublic, "console-public", false, "allow --console on an address beyond loopback (whoever reaches it sees sessions, policies and the ledger)")
	f.StringArrayVar(&consoleHosts, "console-host", nil, "host name the console answers to besides loopback and its address (repeatable)")
	adm.add(f)
	return cmd
}

// nodeLimits reads the node's request-limit flags.
func nodeLimits(maxUpload, maxInflight, maxChunk, maxStream, streamOutput string, maxConns, maxConnsPerAddr int) (node.Limits, error) {
	var l node.Limits
	var err error
	if l.MaxUploadBytes, err = bytesize.Parse(maxUpload); err != nil || l.MaxUploadBytes <= 0 {
		return l, usageError("node: --max-upload %q: want a size such as 64MiB", maxUpload)
	}
	if l.MaxChunkBytes, err = bytesize.Parse(maxChunk); err != nil || l.MaxChunkBytes <= 0 {
		return l, usageError("node: --max-chunk %q: want a size such as 4MiB", maxChunk)
	}
	if l.MaxStreamBytes, err = bytesize.Parse(maxStream); err != nil || l.MaxStreamBytes <= 0 {
		return l, usageError("node: --max-stream %q: want a size such as 64GiB", maxStream)
	}
	if l.StreamOutputAbove, err = bytesize.Parse(streamOutput); err != nil || l.StreamOutputAbove <= 0 {
		return l, usageError("node: --stream-output %q: want a size such as 16MiB", streamOutput)
	}
	if l.MaxInflightBytes, err = bytesize.Parse(maxInflight); err != nil || l.MaxInflightBytes < max(l.MaxUploadBytes, l.MaxChunkBytes) {
		return l, usageError("node: --max-inflight %q: want a size of at least --max-upload (%s) and --max-chunk (%s)", maxInflight, maxUpload, maxChunk)
	}
	if maxConns < 1 || maxConnsPerAddr < 1 {
		return l, usageError("node: --max-conns and --max-conns-per-addr must be at least 1")
	}
	l.HTTP.MaxConns, l.HTTP.MaxConnsPerAddr = maxConns, maxConnsPerAddr
	return l, nil
}

// drainNode stops admitting work and waits, at most grace, for the runs in
// progress; a second signal cuts the wait short.
func drainNode(n *node.Node, grace time.Duration, log *slog.Logger) {
	log.Info("draining: no new sessions or uploads; runs in progress may finish", "shutdown_grace", grace.String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	start := time.Now()
	if left := n.Drain(ctx); left > 0 {
		log.Warn("stopping with runs in progress: they are recorded as interrupted and run again at the next start", "runs", left, "waited", time.Since(start).Round(time.Millisecond).String())
		return
	}
	log.Info("stopping: no run in progress", "waited", time.Since(start).Round(time.Millisecond).String())
}

// nodeLedger is the ledger a node records on.
type nodeLedger struct {
	app     ledger.Appender
	read    *lclient.Client // reads the same ledger (the console's explorer)
	members node.Members    // consortium membership, as that ledger's state says
	name    string
	status  func(context.Context) (node.LedgerState, error)
	close   func()
}

// openNodeLedger opens the embedded ledger under dataDir/ledger (serving
// its API on listen, if set), or a client of the ledger at url.
func openNodeLedger(ctx context.Context, dataDir, url, listen string, log *slog.Logger) (*nodeLedger, error) {
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if url != "" {
		lc, err := newLedgerClient(url)
		if err != nil {
			return nil, fmt.Errorf("node: --ledger: %w", err)
		}
		vs, err := lc.Validators(octx)
		if err != nil {
			return nil, fmt.Errorf("node: %w", explainLedgerError(lc, err))
		}
		log.Info("recording on an external ledger", "url", lc.URL(), "origin", vs.Origin, "validators", len(vs.Validators))
		status := func(ctx context.Context) (node.LedgerState, error) {
			st, err := lc.Status(ctx)
			if err != nil {
				return node.LedgerState{}, err
			}
			return node.LedgerState{Origin: vs.Origin, Height: st.Height, Size: st.Size, Peers: st.Peers, CatchingUp: st.CatchingUp}, nil
		}
		return &nodeLedger{app: lc, read: lc, members: lc, name: vs.Origin, status: status, close: func() {}}, nil
	}
	var ln net.Listener
	if listen != "" {
		var err error
		if ln, err = listenTCP(listen, "--ledger-listen"); err != nil {
			return nil, fmt.Errorf("node: %w", err)
		}
	}
	dir := filepath.Join(dataDir, "ledger")
	e, err := ledger.OpenEmbedded(octx, dir, ledger.EmbeddedOptions{Logger: log})
	if err != nil {
		if ln != nil {
			ln.Close()
		}
		return nil, fmt.Errorf("node: %w", err)
	}
	origin := ledger.Origin(e.ChainID())
	read, err := console.LedgerClient(e.Handler())
	if err != nil {
		e.Close()
		return nil, fmt.Errorf("node: %w", err)
	}
	status := func(context.Context) (node.LedgerState, error) {
		st := e.Status()
		return node.LedgerState{Origin: origin, Height: st.Height, Size: st.Size, Peers: st.Peers, CatchingUp: st.CatchingUp}, nil
	}
	nl := &nodeLedger{app: e, read: read, members: e, name: origin, status: status, close: func() {
		if err := e.Close(); err != nil {
			log.Error("closing the embedded ledger", "err", err)
		}
	}}
	log.Info("embedded ledger open", "dir", dir, "origin", origin)
	if listen == "" {
		return nl, nil
	}
	srv := httpguard.NewServer(e.Handler(), httpguard.Limits{}, nil, slog.NewLogLogger(log.Handler(), slog.LevelDebug))
	go srv.Serve(httpguard.Listen(ln, httpguard.Limits{}, nil))
	log.Info("ledger API listening", "url", "http://"+ln.Addr().String(), "origin", origin)
	nl.close = func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(sctx)
		cancel()
		if err := e.Close(); err != nil {
			log.Error("closing the embedded ledger", "err", err)
		}
	}
	return nl, nil
}

// checkLoopback refuses addresses that are not on the loopback interface.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return errors.New("want a loopback address such as 127.0.0.1:7480; to serve a ledger to others run 'cloister ledger start'")
	}
	return nil
}

// nodeTPMAttester opens the TPM, creates the attestation key and writes
// its public key to DIR/tpm-ak.pem: the value a policy lists under
// isolates[class=tpm].platform_keys.
func nodeTPMAttester(spec, dataDir string, log *slog.Logger) (*tpm.Attester, func(), error) {
	rwc, err := tpm.Open(spec)
	if err != nil {
		return nil, nil, err
	}
	a, err := tpm.NewAttester(rwc)
	if err != nil {
		rwc.Close()
		return nil, nil, err
	}
	pemAK, err := a.PublicKeyPEM()
	if err != nil {
		a.Close()
		rwc.Close()
		return nil, nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dataDir, "tpm-ak.pem")
	if err := atomicfile.WriteFile(path, pemAK, 0o644); err != nil {
		a.Close()
		rwc.Close()
		return nil, nil, fmt.Errorf("node: writing %s: %w", path, err)
	}
	log.Info("TPM attestation key ready", "tpm", spec, "ak_public_key", path)
	return a, func() { a.Close(); rwc.Close() }, nil
}

// listenTCP listens on addr; a port in use is told with what to do.
func listenTCP(addr, flag string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("listening on %s: the address is in use, by another node or a local network of 'cloister up' perhaps: stop it ('cloister down'), or choose another %s", addr, flag)
	}
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	return ln, nil
}

// providerFlags make a node findable on the ledger and let it offer its
// capacity (rule version 4, decision 0110).
type providerFlags struct {
	endpoint, organisation string
	org                    ed25519.PublicKey
	ttl                    time.Duration
	memory, price          string
	cores, concurrency     uint64
	regions                []string
}

func (p *providerFlags) register(f *pflag.FlagSet) {
	f.StringVar(&p.endpoint, "endpoint", "", "the URL others reach this node at, recorded in its node.registered entry (e.g. https://node1.example:7443)")
	f.StringVar(&p.organisation, "organisation", "", "the consortium member key (ed25519:…) of the organisation running this node, recorded in its node.registered entry")
	f.DurationVar(&p.ttl, "offer-ttl", 0, "offer capacity on the ledger, each offer living this long (1s to 10m) and renewed every third of it (0: no offer)")
	f.StringVar(&p.memory, "offer-memory", "", "with --offer-ttl: memory offered, e.g. 4GiB")
	f.Uint64Var(&p.cores, "offer-cores", uint64(runtime.NumCPU()), "with --offer-ttl: cores offered")
	f.Uint64Var(&p.concurrency, "offer-concurrency", uint64(runtime.NumCPU()), "with --offer-ttl: concurrent runs offered")
	f.StringVar(&p.price, "offer-price", "", "with --offer-ttl: price per CPU-second, a decimal such as 0.001")
	f.StringSliceVar(&p.regions, "offer-region", nil, "with --offer-ttl: region label (repeatable)")
}

// parse checks the flags and returns the offer, nil without --offer-ttl.
func (p *providerFlags) parse(noLedger bool) (*node.OfferSpec, error) {
	if noLedger && (p.endpoint != "" || p.organisation != "" || p.ttl != 0) {
		return nil, usageError("node: --endpoint, --organisation and --offer-ttl are recorded on a ledger; --no-ledger excludes them")
	}
	if p.endpoint != "" {
		u, err := url.Parse(p.endpoint)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, usageError("node: --endpoint %q: want an http(s) URL with a host and no user, query or fragment", p.endpoint)
		}
	}
	if p.organisation != "" {
		k, err := keys.ParseSigningKey(p.organisation)
		if err != nil {
			return nil, usageError("node: --organisation: %v", err)
		}
		p.org = k
	}
	if p.ttl == 0 {
		return nil, nil
	}
	if p.ttl < time.Second || p.ttl > 600*time.Second {
		return nil, usageError("node: --offer-ttl %s: want 1s to 10m", p.ttl)
	}
	mem, err := bytesize.Parse(p.memory)
	if err != nil || mem <= 0 {
		return nil, usageError("node: --offer-memory %q: want a size such as 4GiB (required with --offer-ttl)", p.memory)
	}
	if p.cores == 0 || p.concurrency == 0 {
		return nil, usageError("node: --offer-cores and --offer-concurrency must be at least 1")
	}
	return &node.OfferSpec{Memory: uint64(mem), Cores: p.cores, Concurrency: p.concurrency, Price: p.price,
		Regions: p.regions, TTL: p.ttl}, nil
}
