package cli

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/witness"
)

func newLedgerWitnessCmd() *cobra.Command {
	var (
		keyFile, dir, listen, genesis, name string
		interval                            time.Duration
		logs                                logFlags
	)
	cmd := &cobra.Command{
		Use:   "witness --ledger URL --key FILE",
		Short: "Follow a ledger's checkpoints, check their consistency and cosign them",
		Long: `witness follows the ledger at --ledger as a verifying client (the validator
set followed from the genesis, every checkpoint consistent with the last),
and cosigns each checkpoint it accepted with the Ed25519 key of the
principal key file --key, in the shape of C2SP tlog-witness and
tlog-cosignature. It serves, on --listen:

  POST /add-checkpoint  a checkpoint to cosign: "old N", the consistency
                        proof from N, a blank line, the signed note; 200
                        with the cosignature line, 409 with the witness's
                        size, 422 when it contradicts what the witness
                        cosigned (a fork; the evidence is kept)
  GET  /checkpoint      the latest cosigned checkpoint
  GET  /forks           the fork evidence kept

Clients require it with 'cloister ledger verify --witness URL --witness-key
VKEY'; the verifier key is printed at start. State (what it trusts, what it
cosigned, fork evidence) is kept in --dir.

Exit status: 0 stopped by a signal; 1 it could not start; 2 bad usage.`,
		Example: `  cloister key new --out witness.key
  cloister ledger witness --ledger http://127.0.0.1:26680 --key witness.key --listen 127.0.0.1:7490 --dir ./witness
  cloister ledger verify --ledger http://127.0.0.1:26680 --witness http://127.0.0.1:7490 --witness-key witness-1a2b3c4d+…`,
		Args: cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if keyFile == "" || dir == "" {
			return usageError("ledger witness: --key FILE and --dir DIR are required")
		}
		log, err := logs.logger("ledger witness", cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		k, err := keys.Load(keyFile)
		if err != nil {
			return usageError("ledger witness: --key: %v", err)
		}
		c, err := pinnedClient("ledger witness", newClient, genesis)
		if err != nil {
			return err
		}
		w, err := witness.New(witness.Config{Ledger: c, Key: k.Signer(), Name: name, Dir: filepath.Clean(dir), Logger: log})
		if err != nil {
			return usageError("ledger witness: %v", err)
		}
		lis, err := net.Listen("tcp", listen)
		if err != nil {
			return failure(fmt.Errorf("ledger witness: --listen: %w", err))
		}
		var conns httpguard.Stats
		srv := httpguard.NewServer(w.Handler(), httpguard.Limits{}, &conns, slog.NewLogLogger(log.Handler(), slog.LevelError))
		go func() {
			if err := srv.Serve(httpguard.Listen(lis, httpguard.Limits{}, &conns)); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("witness API stopped", "err", err)
			}
		}()
		fmt.Fprintf(cmd.OutOrStdout(), "witness %s on http://%s\n", w.VerifierKey(), lis.Addr())
		ctx, stop := signalContext(cmd)
		defer stop()
		w.Run(ctx, interval)
		srv.Close()
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&keyFile, "key", "", "principal key file whose Ed25519 key cosigns (see 'cloister key')")
	f.StringVar(&dir, "dir", "", "state directory (what the witness trusts and cosigned, fork evidence)")
	f.StringVar(&listen, "listen", "127.0.0.1:7490", "address of the witness API")
	f.StringVar(&genesis, "genesis", "", "the ledger's genesis hash to pin (default: trust on first use)")
	f.StringVar(&name, "name", "", "the witness's name in cosignatures (default witness-<8 hex of its key's hash>)")
	f.DurationVar(&interval, "interval", 2*time.Second, "how often to fetch the ledger's checkpoint")
	logs.add(f)
	return cmd
}
