package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/attest/tpm"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/node"
)

func newNodeCmd() *cobra.Command {
	var (
		listen, dataDir, class, logLevel, tpmSpec string
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

With --isolate-class tpm the node quotes with an attestation key of the TPM
named by --tpm (a device, or tcp:HOST:PORT of a swtpm server) and writes its
public key to DIR/tpm-ak.pem: a policy lists that PEM block under
isolates[class=tpm].platform_keys, with the PCR digest under measurements.

Logs go to standard error. SIGINT or SIGTERM stops the node cleanly.

Exit status: 0 stopped by a signal; 1 the node could not start or failed;
2 bad usage.`,
		Example: `  cloister node --listen 127.0.0.1:7443 --data ./node-data
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
			log := slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			opts := node.Options{DataDir: dataDir, IsolateClass: attest.Class(class), WarmWorkers: warm, Logger: log}
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
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
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
