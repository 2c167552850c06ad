package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/tpm"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/node"
)

func newNodeCmd() *cobra.Command {
	var (
		listen, dataDir, class, logLevel, tpmSpec string
		ledgerURL, ledgerListen                   string
		noLedger                                  bool
		warm                                      int
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
The garbage collector runs with GOGC=400 unless GOGC or GOMEMLIMIT is set.

Logs go to standard error. SIGINT or SIGTERM stops the node cleanly.

Exit status: 0 stopped by a signal; 1 the node could not start or failed;
2 bad usage.`,
		Example: `  cloister node --listen 127.0.0.1:7443 --data ./node-data
  cloister node --data ./node-data --ledger-listen 127.0.0.1:7480
  cloister node --data ./node-data --ledger http://10.0.0.5:26680
  cloister node --data ./node-data --isolate-class tpm --tpm tcp:127.0.0.1:2321
  cloister key public ./node-data/platform.key --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return usageError("node: --data DIR is required")
			}
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return usageError("node: --log-level %q: want debug, info, warn or error", logLevel)
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
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			log.Info("garbage collector", "setting", node.ConfigureGC())
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			opts := node.Options{DataDir: dataDir, IsolateClass: attest.Class(class), WarmWorkers: warm, Logger: log}
			if !noLedger {
				nl, err := openNodeLedger(ctx, dataDir, ledgerURL, ledgerListen, log)
				if err != nil {
					return failure(err)
				}
				defer nl.close()
				opts.Ledger, opts.LedgerName = nl.app, nl.name
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
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				return failure(fmt.Errorf("node: listening on %s: %w", listen, err))
			}
			log.Info("node listening", "url", "https://"+ln.Addr().String(), "isolate_class", string(n.Class()),
				"platform_key", keys.FormatSigningKey(n.PlatformKey()), "data", dataDir)
			errc := make(chan error, 1)
			go func() { errc <- n.Serve(ln) }()
			select {
			case err := <-errc:
				if !errors.Is(err, http.ErrServerClosed) {
					return failure(fmt.Errorf("node: %w", err))
				}
			case <-ctx.Done():
				// The deferred Close ends long polls, waits up to 5 s
				// for requests in flight and leaves running sessions to
				// be run again at the next start.
				log.Info("stopping")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:7443", "TCP address to serve TLS on")
	f.StringVar(&dataDir, "data", "", "data directory (platform key, sessions, compilation cache)")
	f.StringVar(&class, "isolate-class", "software", "isolate class to attest as")
	f.StringVar(&tpmSpec, "tpm", "/dev/tpmrm0", "with --isolate-class tpm: TPM device path or tcp:HOST:PORT of a swtpm server")
	f.IntVar(&warm, "warm-workers", 2, "jailed workers kept started and waiting for a run")
	f.StringVar(&ledgerURL, "ledger", "", "record on the external ledger at this API URL instead of the embedded one")
	f.StringVar(&ledgerListen, "ledger-listen", "", "serve the embedded ledger's public HTTP API on this loopback address (plain HTTP; clients verify what it serves)")
	f.BoolVar(&noLedger, "no-ledger", false, "run without a ledger: nothing is registered or recorded")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// nodeLedger is the ledger a node records on.
type nodeLedger struct {
	app   ledger.Appender
	name  string
	close func()
}

// openNodeLedger opens the embedded ledger under dataDir/ledger (serving
// its API on listen, if set), or a client of the ledger at url.
func openNodeLedger(ctx context.Context, dataDir, url, listen string, log *slog.Logger) (*nodeLedger, error) {
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if url != "" {
		lc, err := lclient.New(url)
		if err != nil {
			return nil, fmt.Errorf("node: --ledger: %w", err)
		}
		vs, err := lc.Validators(octx)
		if err != nil {
			return nil, fmt.Errorf("node: ledger %s: %w", url, err)
		}
		log.Info("recording on an external ledger", "url", lc.URL(), "origin", vs.Origin, "validators", len(vs.Validators))
		return &nodeLedger{app: lc, name: vs.Origin, close: func() {}}, nil
	}
	dir := filepath.Join(dataDir, "ledger")
	e, err := ledger.OpenEmbedded(octx, dir, ledger.EmbeddedOptions{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("node: %w", err)
	}
	origin := ledger.Origin(e.ChainID())
	nl := &nodeLedger{app: e, name: origin, close: func() {
		if err := e.Close(); err != nil {
			log.Error("closing the embedded ledger", "err", err)
		}
	}}
	log.Info("embedded ledger open", "dir", dir, "origin", origin)
	if listen == "" {
		return nl, nil
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		nl.close()
		return nil, fmt.Errorf("node: --ledger-listen: %w", err)
	}
	srv := &http.Server{Handler: e.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go srv.Serve(ln)
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
	if err := writeFileAtomic(path, pemAK, 0o644); err != nil {
		a.Close()
		rwc.Close()
		return nil, nil, fmt.Errorf("node: writing %s: %w", path, err)
	}
	log.Info("TPM attestation key ready", "tpm", spec, "ak_public_key", path)
	return a, func() { a.Close(); rwc.Close() }, nil
}

func init() { rootCmd.AddCommand(newNodeCmd()) }
