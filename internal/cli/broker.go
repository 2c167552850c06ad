package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/broker"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/httpguard"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/sealed"
)

func newBrokerCmd() *cobra.Command {
	var listen, dataDir string
	var logs logFlags
	cmd := &cobra.Command{
		Use:   "broker --listen ADDR --data DIR [--ledger URL]",
		Short: "Run a key broker: release content keys only to attested isolates under ledger grants",
		Long: `broker runs a key broker. Owners register content keys (or shares of them)
sealed to the broker's key, after verifying the broker's evidence ("cloister
broker register"). An isolate asks for a key with fresh evidence binding its
session key and a broker nonce; the broker checks the evidence against the
grant on the ledger, records a key.released entry, and answers only once
that entry is committed — the ledger judges the grant's window by block
time, its revocation and its uses. The share goes back sealed to the
session's key. docs/broker.md tells the protocol and the trust argument.

DIR holds the broker's key (broker.key) and the registered shares, still
sealed to that key. The broker prints its URL and keys on standard output,
one "key value" line each (url, signing_key, sealing_key), then logs
(text, or one JSON object a line with --log-format json). It serves
/healthz (it answers) and /readyz (its attester produces evidence and its
ledger answers and is not catching up; 503 and the reasons otherwise).

Exit status: 0 stopped by a signal; 1 could not start; 2 bad usage.`,
		Example: `  cloister broker --listen 127.0.0.1:7500 --data broker1 --ledger http://127.0.0.1:26680`,
		Args:    cobra.NoArgs,
	}
	newClient := ledgerURLFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if listen == "" || dataDir == "" {
			return usageError("broker: --listen ADDR and --data DIR are required")
		}
		// Without a ledger the broker takes registrations and refuses
		// every release: there is nowhere to record it.
		var lc *lclient.Client
		ledgerName := "none"
		if cmd.Flags().Lookup("ledger").Value.String() != "" || os.Getenv("CLOISTER_LEDGER") != "" {
			c, err := newClient()
			if err != nil {
				return err
			}
			lc, ledgerName = c, c.URL()
		}
		log, err := logs.logger("broker", cmd.ErrOrStderr())
		if err != nil {
			return err
		}
		opts := broker.Options{Dir: dataDir, Logger: log}
		if lc != nil {
			opts.Ledger = lc
		}
		b, err := broker.New(opts)
		if err != nil {
			return failure(err)
		}
		ln, err := listenTCP(listen, "--listen")
		if err != nil {
			return failure(fmt.Errorf("broker: %w", err))
		}
		srv := httpguard.NewServer(b.Handler(), httpguard.Limits{}, b.ConnStats(), nil)
		ctx, stop := signalContext(cmd)
		defer stop()
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "url http://%s\nsigning_key %s\nsealing_key %s\n", ln.Addr(), protocol.FormatEd25519Key(b.SigningKey()), b.SealingKey())
		log.Info("key broker running", "url", "http://"+ln.Addr().String(), "ledger", ledgerName)
		errc := make(chan error, 1)
		go func() { errc <- srv.Serve(httpguard.Listen(ln, httpguard.Limits{}, b.ConnStats())) }()
		select {
		case <-ctx.Done():
			log.Info("key broker stopping")
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(sctx)
			return nil
		case err := <-errc:
			return failure(fmt.Errorf("broker: %w", err))
		}
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "", "address to serve the broker API on (HOST:PORT; port 0 picks one)")
	f.StringVar(&dataDir, "data", "", "data directory (broker key, registered shares)")
	logs.add(f)
	cmd.AddCommand(newBrokerRegisterCmd())
	return cmd
}

// escrow is what "broker register" adds to a sealed-program JSON: where
// the content key is held. "artifact register" puts it on the ledger.
type escrow struct {
	Brokers    []string `json:"brokers"`
	BrokerKeys []string `json:"broker_keys"`
	Threshold  int      `json:"threshold"`
	Commitment []string `json:"commitment"`
}

func newBrokerRegisterCmd() *cobra.Command {
	var (
		urls, pins, measurements              []string
		keyFile, artifact, ckFile, sealedJSON string
		shares, threshold                     int
	)
	cmd := &cobra.Command{
		Use:   "register --broker URL [--broker-key KEY] --key OWNER.key --artifact DIGEST --content-key FILE [--shares N --threshold K --broker URL...]",
		Short: "Share a content key among attested brokers",
		Long: `register splits the content key of a sealed file into --shares shares, any
--threshold of which recover it (Shamir over ristretto255 with a Feldman
commitment; one share is the key itself), and registers share i with the
i-th --broker — but only after verifying that broker's evidence: fresh
(over a nonce of this command), binding the broker's keys, signed by its
vendor's chain (hardware brokers) or by the --broker-key pinned for it
(software brokers sign with their own key, so without a pin their evidence
proves nothing and is refused), and, with --measurement, from an allowed
runtime. A broker that fails is not
given anything, and nothing is registered anywhere unless every broker
passes.

With --sealed-json FILE (the JSON "cloister program seal --json" printed),
the brokers, their keys, the threshold and the commitment are added to it
for "cloister artifact register". Without it they are printed as JSON.

Exit status: 0 registered; 1 a broker's evidence failed or a broker refused;
2 bad usage or unreadable files.`,
		Example: `  cloister broker register --broker http://127.0.0.1:7500 --broker-key ed25519:… \
      --key alice.key --artifact sha256:… --content-key model.wasm.sealed.key --sealed-json model.json
  cloister broker register --shares 3 --threshold 2 \
      --broker http://b1:7500 --broker http://b2:7500 --broker http://b3:7500 \
      --broker-key ed25519:… --broker-key ed25519:… --broker-key ed25519:… \
      --key alice.key --artifact sha256:… --content-key model.key --sealed-json model.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(urls) == 0 || keyFile == "" || artifact == "" || ckFile == "" {
				return usageError("broker register: --broker, --key, --artifact and --content-key are required")
			}
			if shares == 0 {
				shares = len(urls)
			}
			if threshold == 0 {
				threshold = shares
			}
			if len(urls) != shares || len(pins) != 0 && len(pins) != len(urls) {
				return usageError("broker register: %d --broker and %d --broker-key for %d shares: give one broker per share, and one pinned key per broker or none", len(urls), len(pins), shares)
			}
			owner, err := loadKey(keyFile)
			if err != nil {
				return err
			}
			ck, sum, err := sealed.LoadKeyFile(ckFile)
			if err != nil {
				return usageError("broker register: --content-key: %v", err)
			}
			if sum.Digest != "" && sum.Digest != artifact {
				return usageError("broker register: --content-key is the key of %s, not of --artifact %s", sum.Digest, artifact)
			}
			var ms [][]byte
			for _, m := range measurements {
				b, err := hex.DecodeString(m)
				if err != nil {
					return usageError("broker register: --measurement %q: not hex", m)
				}
				ms = append(ms, b)
			}
			ctx, stop := signalContext(cmd)
			defer stop()
			var vbs []*broker.VerifiedBroker
			for i, u := range urls {
				var pk ed25519.PublicKey
				p := broker.Pins{Measurements: ms}
				if len(pins) > 0 {
					if pk, err = protocol.ParseEd25519Key(pins[i]); err != nil {
						return usageError("broker register: --broker-key %d: %v", i+1, err)
					}
					p.Keys = []ed25519.PublicKey{pk}
				}
				vb, err := broker.Verify(ctx, u, p)
				if err != nil {
					return failure(fmt.Errorf("broker register: refusing to register with %s: %w", u, err))
				}
				if pk != nil && !vb.Signing.Equal(pk) {
					return failure(fmt.Errorf("broker register: %s has signing key %s, not the pinned %s", u, vb.Info.SigningKey, pins[i]))
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "broker %d %s: evidence verified (%s, measurement %s)\n", i+1, u, vb.Claims.Class, hex.EncodeToString(vb.Claims.Measurement))
				vbs = append(vbs, vb)
			}
			parts, com, err := broker.Split(ck, shares, threshold)
			if err != nil {
				return usageError("broker register: %v", err)
			}
			for i, vb := range vbs {
				if err := broker.Register(ctx, vb, owner.Signer(), artifact, parts[i], threshold); err != nil {
					return failure(fmt.Errorf("broker register: %w", err))
				}
				clear(parts[i].Value[:])
			}
			es := escrow{Brokers: urls, Threshold: threshold, Commitment: com}
			for _, vb := range vbs {
				es.BrokerKeys = append(es.BrokerKeys, vb.Info.SigningKey)
			}
			if sealedJSON == "" {
				return printJSON(cmd.OutOrStdout(), es)
			}
			return updateJSONFile(sealedJSON, es)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&urls, "broker", nil, "broker URL; repeat, in share order")
	f.StringArrayVar(&pins, "broker-key", nil, "the signing key pinned for each --broker, in order (ed25519:…); required for software brokers")
	f.StringArrayVar(&measurements, "measurement", nil, "allowed broker runtime measurement (hex); repeat; default any")
	f.StringVar(&keyFile, "key", "", "the owner's principal key file")
	f.StringVar(&artifact, "artifact", "", "ciphertext digest of the sealed file (sha256:…)")
	f.StringVar(&ckFile, "content-key", "", `content key file written by "cloister program seal"`)
	f.StringVar(&sealedJSON, "sealed-json", "", `sealed-program JSON to add the brokers and commitment to`)
	f.IntVar(&shares, "shares", 0, "number of shares (default: one per --broker)")
	f.IntVar(&threshold, "threshold", 0, "shares needed to recover the key (default: all)")
	return cmd
}

// updateJSONFile merges v's members into the JSON object in path.
func updateJSONFile(path string, v any) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return usageError("%v", err)
	}
	m := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &m); err != nil {
		return usageError("%s: %v", path, err)
	}
	add, _ := json.Marshal(v)
	var am map[string]json.RawMessage
	json.Unmarshal(add, &am)
	for k, x := range am {
		m[k] = x
	}
	out, _ := json.MarshalIndent(m, "", "  ")
	if err := atomicfile.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		return failure(err)
	}
	return nil
}
