package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/dispatch"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger/deal"
	"github.com/cloisterhq/cloister/market"
)

func newRequestCmd() *cobra.Command {
	var dispatcher, keyFile, program, sealedDigest, require, outDir, ledgerURL, maxPrice string
	var inputs []string
	var deadline time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "request --dispatcher URL --key CONSUMER.key --program SHA256 --sealed DIGEST --require EXPR --input NAME=PATH --output-dir DIR",
		Short: "Run a sealed program on a provider a dispatcher matches, checking everything itself",
		Long: `request asks a dispatcher to run a sealed program (by the sha256 of its
plaintext and the digest of its ciphertext) on an isolate whose verified
claims and offer satisfy --require, a CEL expression over class,
measurement, debug, memory, cores, concurrency, price and regions:

    class in ['sev-snp', 'tdx'] && memory >= 2 * GiB && price <= 0.001

It signs a market.request entry with the consumer's key and hands it to the
dispatcher, which records it on the ledger. For each assignment the
dispatcher makes, request trusts nothing it did not check: it reads the
assignment on the ledger, checks the policy the dispatcher wrote (the
requested program; the consumer its only principal, provider of exactly
these inputs and only reader of every output; no debug; expiry by the
deadline; the node first in the ranking of the assignment's own inputs),
attests the isolate itself (fresh nonce, the node's key pinned) and judges
the requirement on the claims it verified — only then does it send the
inputs. If the provider fails, the dispatcher fails the assignment over
and request follows to the next one; an isolate it refuses it fails over
itself. Results are delivered (written to --output-dir) only once the
ledger takes the consumer's market.accounted entry for that assignment: a
late result from an abandoned provider is never delivered.

The ledger checked is the one the dispatcher names unless --ledger says
which to trust (your own organisation's validator).

Exit status: 0 the outputs are written; 1 no provider could serve the
request before its deadline (reason on standard error); 2 bad usage.`,
		Example: `  cloister request --dispatcher http://127.0.0.1:7600 --key consumer.key \
    --program 4a0a3328…  --sealed sha256:9e1c… --require "class == 'software'" \
    --input text=notes.txt --output-dir out --deadline 60s --json`,
		Args: cobra.NoArgs,
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if dispatcher == "" || keyFile == "" || program == "" || sealedDigest == "" || require == "" || len(inputs) == 0 || outDir == "" {
			return usageError("request: --dispatcher, --key, --program, --sealed, --require, --input and --output-dir are required")
		}
		if deadline < time.Second || deadline > deal.MaxDeadline {
			return usageError("request: --deadline must be 1s to %s", deal.MaxDeadline)
		}
		k, err := keys.Load(keyFile)
		if err != nil {
			return usageError("request: --key: %v", err)
		}
		// The request's form is checked here, so that a mistake is bad
		// usage (exit 2), not a provider that could not serve it.
		probe := deal.Request{ID: strings.Repeat("00", 32), ProgramSHA256: program, Sealed: sealedDigest, Requirement: require,
			Inputs: []string{"x"}, Deadline: "2000-01-01T00:00:00Z", MaxPrice: maxPrice, SealingKey: k.Public().SealingString()}
		if err := probe.Check(); err != nil {
			return usageError("request: %v", err)
		}
		if _, err := market.Compile(require); err != nil {
			return usageError("request: --require: %v", err)
		}
		var ins []dispatch.Input
		for _, s := range inputs {
			name, path, ok := strings.Cut(s, "=")
			if !ok || name == "" || path == "" {
				return usageError("request: --input %q: want NAME=PATH", s)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return usageError("request: --input %s: %v", name, err)
			}
			ins = append(ins, dispatch.Input{Name: name, Data: b})
		}
		o := dispatch.RequestOptions{Dispatcher: strings.TrimRight(dispatcher, "/"), Ledger: ledgerURL, Key: k, ProgramSHA256: program,
			Sealed: sealedDigest, Requirement: require, Inputs: ins, Deadline: deadline, MaxPrice: maxPrice}
		if !asJSON {
			o.Logf = func(format string, args ...any) { fmt.Fprintf(cmd.ErrOrStderr(), "request: "+format+"\n", args...) }
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		out, err := dispatch.Submit(ctx, o)
		if err != nil {
			if errors.Is(err, dispatch.ErrNoProvider) || errors.Is(err, dispatch.ErrRefused) {
				return failure(fmt.Errorf("request: %w", err))
			}
			return failure(fmt.Errorf("request: %w: %v", dispatch.ErrNoProvider, err))
		}
		if err := os.MkdirAll(outDir, 0o700); err != nil {
			return failure(err)
		}
		names := make([]string, 0, len(out.Outputs))
		for name := range out.Outputs {
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			if err := atomicfile.WriteFile(filepath.Join(outDir, filepath.Base(name)), out.Outputs[name], 0o600); err != nil {
				return failure(err)
			}
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), struct {
				*dispatch.Outcome
				Outputs []string `json:"outputs"`
			}{out, names})
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "provider %s (class %s), session %s, token %d\n", out.Provider, out.Class, out.Session, out.Token)
		for _, f := range out.Failovers {
			fmt.Fprintf(w, "failover: token %d, node %s: %s %s\n", f.Token, f.Node, f.Reason, f.Detail)
		}
		fmt.Fprintf(w, "run %d ms, CPU %d ms (provider's report), %d ms observed; accounted in entry %d; outputs %s in %s\n",
			out.WallMillis, out.CPUMillis, out.ObservedMillis, out.Accounted, strings.Join(names, ", "), outDir)
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&dispatcher, "dispatcher", "", "the dispatcher's URL")
	f.StringVar(&keyFile, "key", "", "the consumer's key file (signs the request, provides inputs, reads results)")
	f.StringVar(&program, "program", "", "sha256 of the program's plaintext (hex)")
	f.StringVar(&sealedDigest, "sealed", "", "digest of the sealed program's ciphertext (sha256:…)")
	f.StringVar(&require, "require", "", "requirement: a CEL expression over the verified claims and the offer")
	f.StringArrayVar(&inputs, "input", nil, "an input, NAME=PATH (repeatable)")
	f.StringVar(&outDir, "output-dir", "", "directory the outputs are written to")
	f.DurationVar(&deadline, "deadline", 60*time.Second, "the run must be finished within this time, failovers included")
	f.StringVar(&maxPrice, "max-price", "", "highest price per CPU-second accepted, a decimal such as 0.001")
	f.StringVar(&ledgerURL, "ledger", "", "the ledger to check assignments on (default: the one the dispatcher names)")
	f.BoolVar(&asJSON, "json", false, "print the outcome as JSON (provider, class, each failover)")
	return cmd
}
