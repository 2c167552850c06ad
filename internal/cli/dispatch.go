package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/dispatch"
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/keys"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

func newDispatchCmd() *cobra.Command {
	var listen, keyFile string
	var programs []string
	var maxOpen, maxPerConsumer int
	var logs logFlags
	cmd := &cobra.Command{
		Use:   "dispatch --listen ADDR --ledger URL --key FILE --program LISTING.json",
		Short: "Run a dispatcher: match requests to providers on verified evidence, with failover",
		Long: `dispatch runs a marketplace dispatcher. A consumer hands it a signed
market.request entry ("cloister request"); the dispatcher records it on the
ledger, ranks the live offers (price, then each provider's record of recent
failures, then a tie-break from the request id: package market), opens a
session on the best candidate for a policy it writes from the request,
verifies that session's fresh evidence and the requirement on the verified
claims, records the assignment on the ledger under a fencing token, and
grants that session the sealed program's key under the innovator's
delegation, until the run's deadline and for one use. It watches the run
and fails the assignment over to the next candidate (revoking the grant)
when the node does not answer, the session fails or the run passes its
deadline.

It keeps no secret but its signing key and no plaintext, and no state: it
reads everything back from the ledger, so a restart resumes every open
request, and two dispatchers on one ledger never assign one request twice
(the ledger refuses a second live assignment).

Each --program is a listing its innovator gives: {"name","sha256","sealed":
{digest, owner, stores, brokers, threshold},"outputs":[…],"limits":{…},
"delegation": INDEX of the acl.delegated entry naming this dispatcher}.

It prints "url URL" and "key KEY" on standard output, then logs.

Exit status: 0 stopped by a signal; 1 could not start; 2 bad usage.`,
		Example: `  cloister dispatch --listen 127.0.0.1:7600 --ledger http://127.0.0.1:26680 --key dispatcher.key --program wordcount.listing.json`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if listen == "" || keyFile == "" {
			return usageError("dispatch: --listen ADDR, --ledger URL and --key FILE are required")
		}
		lc, err := newClient()
		if err != nil {
			return err
		}
		// The dispatcher reads the same live offers again and again: its
		// client checks each offer entry's signature once (decision 0119).
		if lc, err = lclient.New(lc.URL(), lclient.WithSignatureCache(dispatchSignatureCache)); err != nil {
			return usageError("dispatch: --ledger: %v", err)
		}
		k, err := keys.Load(keyFile)
		if err != nil {
			return usageError("dispatch: --key: %v", err)
		}
		var listings []dispatch.Listing
		for _, p := range programs {
			b, err := os.ReadFile(p)
			if err != nil {
				return usageError("dispatch: --program: %v", err)
			}
			var l dispatch.Listing
			if err := json.Unmarshal(b, &l); err != nil {
				return usageError("dispatch: --program %s: %v", p, err)
			}
			listings = append(listings, l)
		}
		log, err := logs.logger("dispatch", cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		d, err := dispatch.New(dispatch.Options{Ledger: lc, LedgerURL: lc.URL(), Key: k.Signer(), Programs: listings, Logger: log,
			MaxOpen: maxOpen, MaxPerConsumer: maxPerConsumer})
		if err != nil {
			return usageError("%v", err)
		}
		ln, err := listenTCP(listen, "--listen")
		if err != nil {
			return failure(fmt.Errorf("dispatch: %w", err))
		}
		srv := httpguard.NewServer(d.Handler(), httpguard.Limits{}, d.ConnStats(), nil)
		ctx, stop := signalContext(cmd)
		defer stop()
		fmt.Fprintf(cmd.OutOrStdout(), "url http://%s\nkey %s\n", ln.Addr(), d.Key())
		log.Info("dispatcher running", "url", "http://"+ln.Addr().String(), "ledger", lc.URL(), "programs", len(listings))
		errc := make(chan error, 2)
		go func() { errc <- srv.Serve(httpguard.Listen(ln, httpguard.Limits{}, d.ConnStats())) }()
		go func() { errc <- d.Run(ctx) }()
		select {
		case <-ctx.Done():
			log.Info("dispatcher stopping")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
			return nil
		case err := <-errc:
			if errors.Is(err, http.ErrServerClosed) || ctx.Err() != nil {
				return nil
			}
			return failure(fmt.Errorf("dispatch: %w", err))
		}
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "", "address to serve the dispatcher API on (HOST:PORT; port 0 picks one)")
	f.StringVar(&keyFile, "key", "", "the dispatcher's key file (signs assignments, grants, failovers; delegations name it)")
	f.StringArrayVar(&programs, "program", nil, "a sealed program's listing (JSON; repeatable)")
	f.IntVar(&maxOpen, "max-open", 1024, "requests driven at once; more are refused (429) or left on the ledger for later")
	f.IntVar(&maxPerConsumer, "max-per-consumer", 16, "open requests one consumer may have with this dispatcher")
	logs.add(f)
	return cmd
}

// dispatchSignatureCache is how many checked entries the dispatcher's
// ledger client remembers: the live offers of a large market and more.
const dispatchSignatureCache = 1 << 16
