package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/keys"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/policy"
)

func newWorkflowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workflow",
		Short: "Run a federated total model: a program that calls other organisations' published models",
		Example: `  cloister workflow run --node https://127.0.0.1:7443 --key initiator.key --input plan.json=plan.json \
      --output-dir out examples/fedlogreg/fedlogreg.wasm`,
	}
	cmd.AddCommand(newWorkflowRunCmd(), newWorkflowStatusCmd())
	return cmd
}

// workflowRun is what 'workflow run' did.
type workflowRun struct {
	Session    string           `json:"session"`
	PolicyHash string           `json:"policy_hash"`
	Node       string           `json:"node"`
	Outcome    string           `json:"outcome"`
	ExitCode   int32            `json:"exit_code"`
	WallMS     int64            `json:"wall_ms"`
	Outputs    []workflowOutput `json:"outputs"`
}

type workflowOutput struct {
	Name   string `json:"name"`
	Bytes  int    `json:"bytes"`
	SHA256 string `json:"sha256"`
}

func newWorkflowRunCmd() *cobra.Command {
	var nodeU, keyFile, outDir, timeout string
	var inputs, outputs []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "run --node URL --key INITIATOR.key TOTAL.wasm [--input NAME=PATH] --output-dir DIR [--json]",
		Short: "Run a total model on a node with --federation; its outputs are sealed to the initiator",
		Long: `run runs TOTAL.wasm, a program that calls published models through
guest.Call (host call cloister.model.call/v1), in a session on the
initiator's node (started with --federation). The session's policy names
the initiator (INITIATOR.key) as the one provider of the program and the
inputs and the one reader of the outputs: the initiator attests the
node's isolate before sending anything, the node's federation calls each
model's holder node on the initiator's behalf (each call leaves a
model.called receipt on the ledger naming this session as its workflow),
and the outputs come back sealed to the initiator's key — only it
decrypts them. They are written to DIR.

A sub-model call that fails (a refusal by the model's owner, a revoked
model, no serving node up) fails the program unless it handles the
error: no partial answer is reported as complete.

Exit status: 0 the program ran and exited 0; 1 it failed or was refused;
2 bad usage.`,
		Example: `  cloister workflow run --node https://127.0.0.1:7443 --key initiator.key --input plan.json=plan.json \
      --output-dir out examples/fedlogreg/fedlogreg.wasm`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if nodeU == "" || keyFile == "" || outDir == "" {
			return usageError("workflow run: --node, --key and --output-dir are required")
		}
		k, err := loadKey(keyFile)
		if err != nil {
			return err
		}
		wasm, err := os.ReadFile(args[0])
		if err != nil {
			return usageError("workflow run: %v", err)
		}
		in := map[string][]byte{}
		var names []string
		for _, v := range inputs {
			name, path, err := splitAssign("--input", v)
			if err != nil {
				return err
			}
			if in[name], err = os.ReadFile(path); err != nil {
				return usageError("workflow run: %v", err)
			}
			names = append(names, name)
		}
		d, err := time.ParseDuration(timeout)
		if err != nil || d <= 0 {
			return usageError("workflow run: --timeout %q: want a duration such as 10m", timeout)
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		r, got, err := runWorkflow(ctx, nodeURL(nodeU), k, filepath.Base(args[0]), wasm, names, in, outputs, d)
		if err != nil {
			return failure(fmt.Errorf("workflow run: %w", err))
		}
		if err := os.MkdirAll(outDir, 0o755); err != nil {
			return failure(err)
		}
		for _, o := range r.Outputs {
			if err := atomicfile.WriteFile(filepath.Join(outDir, o.Name), got[o.Name], 0o644); err != nil {
				return failure(err)
			}
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), r)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "session %s: %s, exit %d, %d ms\n", r.Session, r.Outcome, r.ExitCode, r.WallMS)
		for _, o := range r.Outputs {
			fmt.Fprintf(cmd.OutOrStdout(), "  %s  %d bytes  sha256 %s\n", filepath.Join(outDir, o.Name), o.Bytes, o.SHA256)
		}
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&nodeU, "node", "", "the initiator's node (https://HOST:PORT), started with --federation")
	f.StringVar(&keyFile, "key", "", "the initiator's principal key file")
	f.StringArrayVar(&inputs, "input", nil, "NAME=PATH: an input the program reads as /input/NAME (repeatable)")
	f.StringArrayVar(&outputs, "output", []string{"result.json"}, "an output the program writes under /output/ (repeatable)")
	f.StringVar(&outDir, "output-dir", "", "directory the outputs are written to")
	f.StringVar(&timeout, "timeout", "10m", "the run's time limit")
	f.BoolVar(&asJSON, "json", false, "print the run as JSON")
	return cmd
}

// runWorkflow runs a total model in a session on the node at url for the
// initiator k, and returns its outputs, opened with k.
func runWorkflow(ctx context.Context, url string, k *keys.PrivateKey, progName string, wasm []byte, inputNames []string, inputs map[string][]byte,
	outputs []string, timeout time.Duration) (*workflowRun, map[string][]byte, error) {
	info, err := nodeInfoOf(ctx, url)
	if err != nil {
		return nil, nil, err
	}
	pub := k.Public()
	sum := sha256.Sum256(wasm)
	pol := policy.Policy{
		Version: policy.Version, Name: "workflow",
		Principals: []policy.Principal{{ID: "initiator", SigningKey: pub.SigningString(), SealingKey: pub.SealingString(),
			Roles: []policy.Role{policy.RoleProgramProvider, policy.RoleDataProvider, policy.RoleResultReader}}},
		Programs:  []policy.Program{{Name: progName, SHA256: hex.EncodeToString(sum[:]), Provider: "initiator"}},
		HostCalls: []policy.HostCall{{Name: federation.CallName}, {Name: federation.CallsName}},
		Isolates:  []policy.Isolate{{Class: info.IsolateClass, PlatformKeys: []string{info.PlatformKey}}},
		Limits:    policy.Limits{Memory: "256MiB", Timeout: timeout.String(), MaxOutput: "16MiB"},
		Expires:   time.Now().Add(timeout + time.Hour).UTC().Truncate(time.Second),
	}
	for _, n := range inputNames {
		pol.Inputs = append(pol.Inputs, policy.Input{Name: n, Provider: "initiator"})
	}
	for _, o := range outputs {
		pol.Outputs = append(pol.Outputs, policy.Output{Name: o, Readers: []string{"initiator"}})
	}
	doc, err := json.MarshalIndent(&pol, "", "  ")
	if err != nil {
		return nil, nil, err
	}
	parsed, err := policy.Parse(doc)
	if err != nil {
		return nil, nil, fmt.Errorf("policy: %w", err)
	}
	c, err := client.Dial(ctx, url, client.WithPlatformKeys(softwarePlatformKeys(parsed)...), client.WithCreator(k))
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	id, err := c.CreateSession(ctx, doc)
	if err != nil {
		return nil, nil, err
	}
	as, err := c.Attest(ctx, id, parsed)
	if err != nil {
		return nil, nil, err
	}
	defer as.CloseIdleConnections()
	if _, err := as.UploadProgram(ctx, k, progName, wasm); err != nil {
		return nil, nil, err
	}
	for _, n := range inputNames {
		if _, err := as.UploadInput(ctx, k, n, inputs[n]); err != nil {
			return nil, nil, err
		}
	}
	wctx, cancel := context.WithTimeout(ctx, timeout+2*time.Minute)
	defer cancel()
	st, err := as.Wait(wctx)
	if err != nil {
		return nil, nil, err
	}
	r := &workflowRun{Session: id, PolicyHash: parsed.HashHex(), Node: info.PlatformKey, Outputs: []workflowOutput{}}
	if st.Report != nil {
		r.Outcome, r.ExitCode, r.WallMS = st.Report.Outcome, st.Report.ExitCode, st.Report.WallMs
	}
	if !client.Terminal(st.State) || st.Report == nil || st.Reason != "" || r.ExitCode != 0 {
		return r, nil, fmt.Errorf("session %s is %s: %s (outcome %s, exit %d)", id, stateName(st.State), st.Reason, r.Outcome, r.ExitCode)
	}
	got := map[string][]byte{}
	for _, o := range outputs {
		b, err := as.Result(wctx, k, o)
		if err != nil {
			return r, nil, fmt.Errorf("output %s: %w", o, err)
		}
		s := sha256.Sum256(b)
		got[o] = b
		r.Outputs = append(r.Outputs, workflowOutput{Name: o, Bytes: len(b), SHA256: hex.EncodeToString(s[:])})
	}
	as.Close(ctx, k)
	return r, got, nil
}

// workflowStatus is what 'workflow status' prints: the calls, each with
// the size of the checkpoint its receipt was proved included in (with
// --ledger).
type workflowStatus struct {
	Workflow string               `json:"workflow"`
	Calls    []workflowStatusCall `json:"calls"`
}

type workflowStatusCall struct {
	federation.WorkflowCall
	IncludedIn uint64 `json:"included_in,omitempty"`
}

func newWorkflowStatusCmd() *cobra.Command {
	var nodeU, ledgerU, statePath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status --node URL [--ledger URL [--state FILE]] ID",
		Short: "List the sub-model calls a workflow made, with their receipts on the ledger",
		Long: `status asks the initiator's node for the calls workflow ID (the session id
'workflow run' printed) made: for each, the call id, model, function,
holder node, rows and the index of its model.called receipt. Each receipt
is checked here: signed by the holder listed, for this workflow. The run's
outputs were released only once every receipt was on the ledger.

With --ledger, each receipt is also proved: the ledger is verified as
'cloister ledger verify' does (validators' signatures on the checkpoint,
consistency with the checkpoint trusted before, kept in --state), and the
receipt's entry must be included in that checkpoint and be byte for byte
the receipt the holder gave.

The node keeps the latest workflows' lists in memory; the receipts
themselves are on the ledger for good.

Exit status: 0 listed (and proved); 1 the node does not know the
workflow, a receipt does not check or is not proved; 2 bad usage.`,
		Example: `  cloister workflow status --node https://127.0.0.1:7443 --ledger http://127.0.0.1:26680 748d790ca7bbf6c1eff600eb9cc598cd`,
		Args:    cobra.ExactArgs(1),
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if nodeU == "" {
			return usageError("workflow status: --node is required")
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		a, err := federation.DialAdmin(ctx, nodeURL(nodeU), nil)
		if err != nil {
			return failure(fmt.Errorf("workflow status: %w", err))
		}
		wf, err := a.Workflow(ctx, args[0])
		if err != nil {
			return failure(fmt.Errorf("workflow status: %w", err))
		}
		out := workflowStatus{Workflow: wf.Workflow, Calls: make([]workflowStatusCall, len(wf.Calls))}
		for i, c := range wf.Calls {
			out.Calls[i].WorkflowCall = c
		}
		if ledgerU != "" {
			lc, err := lclient.New(ledgerU)
			if err != nil {
				return usageError("workflow status: --ledger: %v", err)
			}
			for i := range out.Calls {
				c := &out.Calls[i]
				idx := c.Receipt
				if idx == 0 {
					return failure(fmt.Errorf("workflow status: call %s has no receipt on the ledger yet", c.Call))
				}
				res, err := lc.Verify(ctx, statePath, &idx)
				if err != nil {
					return failure(fmt.Errorf("workflow status: receipt %d: %w", idx, err))
				}
				if res.Entry == nil || !bytes.Equal(res.Entry.Tx, c.Entry) {
					return failure(fmt.Errorf("workflow status: entry %d is not the receipt of call %s", idx, c.Call))
				}
				c.IncludedIn = res.Checkpoint.Size
			}
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), out)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "workflow %s: %d calls\n", out.Workflow, len(out.Calls))
		for _, c := range out.Calls {
			fmt.Fprintf(cmd.OutOrStdout(), "  #%d  %s.%s  rows %d  holder %s", c.Receipt, c.Model, c.Function, c.Rows, c.Holder)
			if c.IncludedIn != 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "  included in checkpoint %d", c.IncludedIn)
			}
			fmt.Fprintln(cmd.OutOrStdout())
		}
		return nil
	}
	cmd.Flags().StringVar(&nodeU, "node", "", "the initiator's node (https://HOST:PORT)")
	cmd.Flags().StringVar(&ledgerU, "ledger", "", "prove each receipt included in the ledger at this URL")
	cmd.Flags().StringVar(&statePath, "state", "", "the ledger trust state to verify against and update (default: the user's, as 'ledger verify')")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the calls as JSON")
	return cmd
}
