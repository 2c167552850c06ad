package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/receipt"
)

func newReceiptCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "receipt",
		Short: "Fetch and verify session receipts",
		Long: `A receipt is everything needed to check by yourself what a node did for one
session: the policy, the session's certificate and evidence, and the
session's ledger entries with their inclusion proofs to a cosigned
checkpoint (docs/console.md). 'get' fetches one from a node's console;
'verify' checks one offline against your own trust root.`,
		Example: `  cloister receipt get --node http://127.0.0.1:7480 --session 3f2a… --out receipt.json
  cloister receipt verify receipt.json --ledger-state st.json`,
	}
	cmd.AddCommand(newReceiptGetCmd(), newReceiptVerifyCmd())
	return cmd
}

func newReceiptGetCmd() *cobra.Command {
	var nodeURL, session, out, statePath string
	cmd := &cobra.Command{
		Use:   "get --node URL --session ID --out FILE",
		Short: "Fetch a session's receipt from a node's console",
		Long: `get fetches the receipt of session ID from the console of the node at URL
(cloister node --console ADDR; the URL is http://ADDR) and writes it to
FILE. It checks only that the file is a receipt: run 'cloister receipt
verify' to check what it says. With --ledger-state, the receipt also
carries the consistency proof between the state file's checkpoint and the
receipt's, so that verify can hold one to the other offline.

Exit status: 0 written; 1 the node did not serve a receipt (the session is
unknown, or its entries are not in a checkpoint yet: try again shortly);
2 bad usage.`,
		Example: `  cloister receipt get --node http://127.0.0.1:7480 --session 3f2a… --out receipt.json
  cloister receipt get --node http://127.0.0.1:7480 --session 3f2a… --out receipt.json --ledger-state st.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if nodeURL == "" || session == "" || out == "" {
				return usageError("receipt get: --node, --session and --out are required")
			}
			if err := protocol.ValidSessionID(session); err != nil {
				return usageError("receipt get: --session: %v", err)
			}
			base, err := url.Parse(strings.TrimRight(nodeURL, "/"))
			if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
				return usageError("receipt get: --node %q: want the console's URL, http://HOST:PORT", nodeURL)
			}
			q := url.Values{}
			if statePath != "" {
				st, err := lclient.LoadState(statePath)
				if err != nil || st == nil {
					return usageError("receipt get: --ledger-state %s: %v", statePath, orMissing(err))
				}
				cp, err := st.TrustedCheckpoint()
				if err != nil {
					return usageError("receipt get: --ledger-state %s: %v", statePath, err)
				}
				q.Set("trusted", strconv.FormatUint(cp.Size, 10))
			}
			u := base.JoinPath("ui", "api", "sessions", session, "receipt.json")
			u.RawQuery = q.Encode()
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			b, err := fetchReceipt(ctx, u.String())
			if err != nil {
				return failure(fmt.Errorf("receipt get: %w", err))
			}
			if _, err := receipt.Parse(b); err != nil {
				return failure(fmt.Errorf("receipt get: %s served %w", u.Host, err))
			}
			if err := atomicfile.WriteFile(out, b, 0o644); err != nil {
				return failure(fmt.Errorf("receipt get: %w", err))
			}
			fmt.Fprintln(cmd.OutOrStdout(), out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&nodeURL, "node", "", "the node's console URL (cloister node --console ADDR serves it at http://ADDR)")
	f.StringVar(&session, "session", "", "session id")
	f.StringVar(&out, "out", "", "file to write the receipt to")
	f.StringVar(&statePath, "ledger-state", "", "ledger state file whose checkpoint the receipt is to be consistent with")
	return cmd
}

func orMissing(err error) error {
	if err == nil {
		return errors.New("no such file")
	}
	return err
}

// fetchReceipt GETs a receipt, bounded in size and time.
func fetchReceipt(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, receipt.MaxBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > receipt.MaxBytes {
		return nil, fmt.Errorf("the receipt is larger than %d bytes", receipt.MaxBytes)
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(b))
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return nil, fmt.Errorf("%s: %s", resp.Status, msg)
	}
	return b, nil
}

func newReceiptVerifyCmd() *cobra.Command {
	var statePath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "verify FILE [--ledger-state FILE]",
		Short: "Check a session receipt offline",
		Long: `verify checks a receipt by itself, with nothing but the file and your trust
root: the checkpoint is cosigned by more than 2/3 of the validators'
power; every entry is canonical, signed by its submitter and included in
the checkpoint; the session's entries are signed by the node's platform
key, which registered on the ledger; the policy text hashes to the hash the
entries name; the evidence is the one session.created committed to, it
verifies under the policy's isolate entry and binds the session key, the
policy hash and the HPKE key; each upload is signed by the principal the
policy lists; the result commitment is signed by the attested session key.

The trust root is --ledger-state FILE: a ledger state file written by
'cloister ledger verify --state FILE' on a machine you trust. The receipt's
validator set must be the pinned one, and its checkpoint consistent with
the pinned checkpoint (same root at the same size, or a consistency proof
the receipt carries: 'receipt get --ledger-state'). Without --ledger-state
the receipt is checked against the validator set it carries itself, which
proves only that it is consistent, not which ledger it comes from; the
output says so.

Exit status: 0 valid; 1 invalid (what failed is on stderr); 2 bad usage or
a file that cannot be read.`,
		Example: `  cloister receipt verify receipt.json --ledger-state st.json
  cloister receipt verify receipt.json --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			b, err := os.ReadFile(args[0])
			if err != nil {
				return usageError("receipt verify: %v", err)
			}
			r, err := receipt.Parse(b)
			if err != nil {
				return usageError("receipt verify: %s: %v", args[0], err)
			}
			var trust *receipt.Trust
			if statePath != "" {
				st, err := lclient.LoadState(statePath)
				if err != nil || st == nil {
					return usageError("receipt verify: --ledger-state %s: %v", statePath, orMissing(err))
				}
				trust = &receipt.Trust{ValidatorSet: st.Validators, Checkpoint: []byte(st.Checkpoint)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), time.Minute)
			defer cancel()
			res, verr := receipt.Verify(ctx, r, trust)
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), res); err != nil {
					return err
				}
			} else {
				w := cmd.OutOrStdout()
				for _, c := range res.Checks {
					mark := "ok  "
					if !c.OK {
						mark = "FAIL"
					}
					fmt.Fprintf(w, "%s %-20s %s\n", mark, c.Name, c.Detail)
				}
				for _, n := range res.Notes {
					fmt.Fprintf(w, "note %s\n", n)
				}
			}
			if verr != nil {
				return failure(verr)
			}
			if !asJSON {
				how := "against your pinned trust root"
				if !res.Pinned {
					how = "against the receipt's own validator set only (not pinned)"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "valid: session %s, %s\n", res.Session, how)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&statePath, "ledger-state", "", "your trust root: a ledger state file (cloister ledger verify --state FILE)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print every check as JSON")
	return cmd
}
