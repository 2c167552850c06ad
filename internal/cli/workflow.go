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
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/keys"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
)

func newWorkflowCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workflow",
		Short: "Run a federated total model: a program that calls other organisations' published models",
		Example: `  cloister workflow run --node https://127.0.0.1:7443 --key initiator.key --input plan.json=plan.json \
      --output-dir out examples/fedlogreg/fedlogreg.wasm`,
	}
	cmd.AddCommand(newWorkflowRunCmd(), newWorkflowStatusCmd(), newWorkflowResultCmd())
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
	// Stored is the blob (in --store) holding the output as the node's
	// isolate sealed it to the initiator.
	Stored string `json:"stored,omitempty"`
}

func newWorkflowRunCmd() *cobra.Command {
	var nodeU, keyFile, outDir, timeout, dagFile, storeU string
	var inputs, outputs []string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "run --node URL --key INITIATOR.key TOTAL.wasm [--input NAME=PATH] [--dag PLAN.json] --output-dir DIR [--json]",
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

With --dag, the run is given a compute plan: the sub-model calls it will
make as tasks, each naming the tasks whose results feed it:

  {"tasks": [{"name": "grad-1-a", "model": "hospital-a/stats", "function": "gradient"},
             {"name": "grad-2-a", "model": "hospital-a/stats", "function": "gradient",
              "after": ["grad-1-a", "grad-1-b"]}, …]}

(each task after tasks listed before it). The plan is the input
workflow.dag.json, pinned by its SHA-256 in the session's policy, which
the initiator attests; the total model declares it to the node
(host call cloister.model.dag/v1) and the node then makes only calls that fit a ready
task, and releases the outputs only if every task was made. Whether or
not a plan was given, the node records the run's call graph on the
ledger (workflow.recorded) before the outputs are released:
'cloister workflow status --ledger' shows and proves it.

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
		if dagFile != "" {
			if in[federation.DAGInput] != nil {
				return usageError("workflow run: --dag and --input %s=… both give the compute plan", federation.DAGInput)
			}
			b, err := os.ReadFile(dagFile)
			if err != nil {
				return usageError("workflow run: --dag: %v", err)
			}
			if _, err := federation.ParseDAG(b); err != nil {
				return usageError("workflow run: --dag %s: %v", dagFile, err)
			}
			in[federation.DAGInput] = b
			names = append(names, federation.DAGInput)
		}
		d, err := time.ParseDuration(timeout)
		if err != nil || d <= 0 {
			return usageError("workflow run: --timeout %q: want a duration such as 10m", timeout)
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		var store *blob.Store
		if storeU != "" {
			if store, err = blob.OpenStore(storeU, blob.Options{Key: k.Signer()}); err != nil {
				return usageError("workflow run: --store: %v", err)
			}
		}
		r, got, err := runWorkflow(ctx, nodeURL(nodeU), k, filepath.Base(args[0]), wasm, names, in, outputs, d, store)
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
			if o.Stored != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "    stored sealed to the initiator as %s in %s\n", o.Stored, storeU)
			}
		}
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&nodeU, "node", "", "the initiator's node (https://HOST:PORT), started with --federation")
	f.StringVar(&keyFile, "key", "", "the initiator's principal key file")
	f.StringArrayVar(&inputs, "input", nil, "NAME=PATH: an input the program reads as /input/NAME (repeatable)")
	f.StringArrayVar(&outputs, "output", []string{"result.json"}, "an output the program writes under /output/ (repeatable)")
	f.StringVar(&outDir, "output-dir", "", "directory the outputs are written to")
	f.StringVar(&storeU, "store", "", "also keep each output, as the node's isolate sealed it to the initiator, in this blob store (http://HOST:PORT/REPO, e.g. the node's --blob-listen; the initiator's key must be a push key); 'workflow result' opens it later")
	f.StringVar(&dagFile, "dag", "", "a compute plan (JSON): the tasks the run's calls must follow, in dependency order")
	f.StringVar(&timeout, "timeout", "10m", "the run's time limit")
	f.BoolVar(&asJSON, "json", false, "print the run as JSON")
	return cmd
}

// runWorkflow runs a total model in a session on the node at url for the
// initiator k, and returns its outputs, opened with k.
func runWorkflow(ctx context.Context, url string, k *keys.PrivateKey, progName string, wasm []byte, inputNames []string, inputs map[string][]byte,
	outputs []string, timeout time.Duration, store *blob.Store) (*workflowRun, map[string][]byte, error) {
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
		in := policy.Input{Name: n, Provider: "initiator"}
		if n == federation.DAGInput {
			in.SHA256 = federation.DAGDigest(inputs[n]) // the node enforces the plan the initiator attests
			pol.HostCalls = append(pol.HostCalls, policy.HostCall{Name: federation.DAGName})
		}
		pol.Inputs = append(pol.Inputs, in)
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
		sr, b, err := as.SealedResult(wctx, k, o)
		if err != nil {
			return r, nil, fmt.Errorf("output %s: %w", o, err)
		}
		s := sha256.Sum256(b)
		got[o] = b
		wo := workflowOutput{Name: o, Bytes: len(b), SHA256: hex.EncodeToString(s[:])}
		if store != nil {
			d, err := storeSealedResult(wctx, store, sr)
			if err != nil {
				return r, nil, fmt.Errorf("output %s: keeping it in %s: %w", o, store, err)
			}
			wo.Stored = d.String()
		}
		r.Outputs = append(r.Outputs, wo)
	}
	as.Close(ctx, k)
	return r, got, nil
}

// workflowStatus is what 'workflow status' prints: the calls in the
// order they were made, each with its place in the call graph and, with
// --ledger, the size of the checkpoint its receipt was proved included in;
// and the workflow.recorded entry that recorded the graph.
type workflowStatus struct {
	Workflow string `json:"workflow"`
	// Recorded is the index of the workflow.recorded entry (0: none
	// found), RecordedBy the node that signed it, RecordIncludedIn the
	// checkpoint it was proved in.
	Recorded         uint64               `json:"recorded,omitempty"`
	RecordedBy       string               `json:"recorded_by,omitempty"`
	RecordIncludedIn uint64               `json:"record_included_in,omitempty"`
	Initiator        string               `json:"initiator,omitempty"`
	Total            string               `json:"total_sha256,omitempty"`
	DAG              string               `json:"dag_sha256,omitempty"`
	Calls            []workflowStatusCall `json:"calls"`
}

type workflowStatusCall struct {
	federation.WorkflowCall
	IncludedIn uint64 `json:"included_in,omitempty"`
}

func newWorkflowStatusCmd() *cobra.Command {
	var nodeU, ledgerU, statePath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--node URL] [--ledger URL [--state FILE]] ID",
		Short: "Show a workflow's call graph: its sub-model calls, in dependency order, with their receipts on the ledger",
		Long: `status shows the calls workflow ID (the session id 'workflow run' printed)
made: for each, its position, the compute plan's task (with --dag), the
calls it came after, the model, function, holder node, rows and the
index of its model.called receipt.

With --ledger, the call graph is read from the ledger: the
workflow.recorded entry the initiator's node signed before it released
the run's outputs. The ledger is verified as 'cloister ledger verify'
does (validators' signatures on the checkpoint, consistency with the
checkpoint trusted before, kept in --state); the record and every
receipt it names must be included in that checkpoint, and each receipt
must be a model.called entry for this workflow and its initiator, made
by the node that recorded the graph. This needs no node: the record
outlives the initiator's node's memory.

With --node only, the initiator's node lists the calls from its memory
(the latest workflows since it started), each receipt checked (signed by
the holder listed, for this workflow). On a ledger that records no
graphs (rule version 14 or older), --node and --ledger together prove
each listed receipt included.

Exit status: 0 shown (and proved); 1 the workflow is unknown, a record
or receipt does not check or is not proved; 2 bad usage.`,
		Example: `  cloister workflow status --ledger http://127.0.0.1:26680 748d790ca7bbf6c1eff600eb9cc598cd
  cloister workflow status --node https://127.0.0.1:7443 748d790ca7bbf6c1eff600eb9cc598cd`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if nodeU == "" && ledgerU == "" {
			return usageError("workflow status: --node or --ledger is required")
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		out, err := workflowStatusOf(ctx, nodeU, ledgerU, statePath, args[0])
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), out)
		}
		w := cmd.OutOrStdout()
		fmt.Fprintf(w, "workflow %s: %d calls", out.Workflow, len(out.Calls))
		if out.Recorded != 0 {
			fmt.Fprintf(w, ", call graph recorded in entry %d by node %s", out.Recorded, out.RecordedBy)
			if out.RecordIncludedIn != 0 {
				fmt.Fprintf(w, " (included in checkpoint %d)", out.RecordIncludedIn)
			}
		}
		if out.DAG != "" {
			fmt.Fprintf(w, ", under compute plan sha256 %s", out.DAG)
		}
		fmt.Fprintln(w)
		for i, c := range out.Calls {
			fmt.Fprintf(w, "  %3d", i)
			if c.Task != "" {
				fmt.Fprintf(w, "  %s", c.Task)
			}
			fmt.Fprintf(w, "  %s.%s  rows %d  receipt #%d  holder %s", c.Model, c.Function, c.Rows, c.Receipt, c.Holder)
			if len(c.After) > 0 {
				fmt.Fprintf(w, "  after %v", c.After)
			}
			if c.IncludedIn != 0 {
				fmt.Fprintf(w, "  included in checkpoint %d", c.IncludedIn)
			}
			fmt.Fprintln(w)
		}
		return nil
	}
	cmd.Flags().StringVar(&nodeU, "node", "", "the initiator's node (https://HOST:PORT): list the calls it remembers")
	cmd.Flags().StringVar(&ledgerU, "ledger", "", "read the recorded call graph from the ledger at this URL, and prove it and each receipt included")
	cmd.Flags().StringVar(&statePath, "state", "", "the ledger trust state to verify against and update (default: the user's, as 'ledger verify')")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the calls as JSON")
	return cmd
}

// workflowStatusOf reads workflow id's calls — from the ledger's record
// when ledgerU is given and the ledger has one, else from the node — and
// with ledgerU proves each entry included.
func workflowStatusOf(ctx context.Context, nodeU, ledgerU, statePath, id string) (*workflowStatus, error) {
	out := &workflowStatus{Workflow: id, Calls: []workflowStatusCall{}}
	var lc *lclient.Client
	if ledgerU != "" {
		var err error
		if lc, err = lclient.New(ledgerU); err != nil {
			return nil, usageError("workflow status: --ledger: %v", err)
		}
		rw, err := lc.Workflow(ctx, id)
		var ae *lclient.APIError
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusNotFound && nodeU != "":
			// no record (an older ledger, or a run that failed): the node's list
		case err != nil:
			return nil, failure(fmt.Errorf("workflow status: %w", err))
		default:
			if err := fromRecord(ctx, lc, statePath, rw, out); err != nil {
				return nil, failure(fmt.Errorf("workflow status: %w", err))
			}
			return out, nil
		}
	}
	a, err := federation.DialAdmin(ctx, nodeURL(nodeU), nil)
	if err != nil {
		return nil, failure(fmt.Errorf("workflow status: %w", err))
	}
	wf, err := a.Workflow(ctx, id)
	if err != nil {
		return nil, failure(fmt.Errorf("workflow status: %w", err))
	}
	out.DAG, out.Recorded = wf.DAG, wf.Record
	for _, c := range wf.Calls {
		out.Calls = append(out.Calls, workflowStatusCall{WorkflowCall: c})
	}
	if lc == nil {
		return out, nil
	}
	for i := range out.Calls {
		c := &out.Calls[i]
		if c.Receipt == 0 {
			return nil, failure(fmt.Errorf("workflow status: call %s has no receipt on the ledger yet", c.Call))
		}
		size, err := proveEntry(ctx, lc, statePath, c.Receipt, c.Entry)
		if err != nil {
			return nil, failure(fmt.Errorf("workflow status: receipt of call %s: %w", c.Call, err))
		}
		c.IncludedIn = size
	}
	return out, nil
}

// proveEntry verifies the ledger and proves the entry at idx included in
// its checkpoint, byte for byte tx; it returns the checkpoint's size.
func proveEntry(ctx context.Context, lc *lclient.Client, statePath string, idx uint64, tx []byte) (uint64, error) {
	res, err := lc.Verify(ctx, statePath, &idx)
	if err != nil {
		return 0, fmt.Errorf("entry %d: %w", idx, err)
	}
	if res.Entry == nil || !bytes.Equal(res.Entry.Tx, tx) {
		return 0, fmt.Errorf("entry %d is not the one expected", idx)
	}
	return res.Checkpoint.Size, nil
}

// fromRecord fills out from the workflow's recorded call graph, proving
// the record and each receipt included and checking each receipt names
// this call, workflow and initiator, and the recording node as its caller.
func fromRecord(ctx context.Context, lc *lclient.Client, statePath string, rw *lclient.RecordedWorkflow, out *workflowStatus) error {
	size, err := proveEntry(ctx, lc, statePath, rw.Index, rw.Entry)
	if err != nil {
		return fmt.Errorf("the recorded call graph: %w", err)
	}
	r := rw.Record
	out.Recorded, out.RecordedBy, out.RecordIncludedIn = rw.Index, rw.Node, size
	out.Initiator, out.Total, out.DAG = r.Initiator, r.Total, r.DAG
	for i, rc := range r.Calls {
		idx := rc.Receipt
		res, err := lc.Verify(ctx, statePath, &idx)
		if err != nil {
			return fmt.Errorf("call %d's receipt, entry %d: %w", i, idx, err)
		}
		if res.Entry == nil {
			return fmt.Errorf("call %d's receipt, entry %d: not proved", i, idx)
		}
		se, err := verify.DecodeEntry(res.Entry.Tx)
		if err != nil {
			return fmt.Errorf("call %d's receipt, entry %d: %w", i, idx, err)
		}
		if err := se.VerifySignature(); err != nil {
			return fmt.Errorf("call %d's receipt, entry %d: %w", i, idx, err)
		}
		if se.Entry.Kind != model.KindCalled {
			return fmt.Errorf("call %d's receipt, entry %d: a %s entry", i, idx, se.Entry.Kind)
		}
		mc, err := model.DecodeCall(se.Entry.Body)
		if err != nil {
			return fmt.Errorf("call %d's receipt, entry %d: %w", i, idx, err)
		}
		if mc.ID != rc.Call || mc.Workflow != r.Workflow || mc.Initiator != r.Initiator || mc.Caller != rw.Node {
			return fmt.Errorf("call %d's receipt, entry %d, names another call, workflow, initiator or caller", i, idx)
		}
		out.Calls = append(out.Calls, workflowStatusCall{IncludedIn: res.Checkpoint.Size, WorkflowCall: federation.WorkflowCall{
			Call: rc.Call, Receipt: idx, Model: mc.Model, Function: mc.Function, Holder: se.Entry.Submitter, Rows: mc.Rows,
			Task: rc.Task, After: rc.After, Entry: res.Entry.Tx}})
	}
	return nil
}

// maxSealedResultBlob bounds a stored sealed result 'workflow result'
// reads (the outputs it keeps are at most the policy's 16 MiB, sealed and
// in base64 in JSON).
const maxSealedResultBlob = 24 << 20

// storeSealedResult keeps sr in store as one JSON blob, and returns its
// digest.
func storeSealedResult(ctx context.Context, store *blob.Store, sr *client.SealedResult) (blob.Digest, error) {
	b, err := json.Marshal(sr)
	if err != nil {
		return "", err
	}
	d := blob.FromBytes(b)
	if err := store.PushBlob(ctx, d, int64(len(b)), bytes.NewReader(b)); err != nil {
		return "", err
	}
	return d, nil
}

// workflowResult is what 'workflow result' opened.
type workflowResult struct {
	Blob    string `json:"blob"`
	Session string `json:"session"`
	Output  string `json:"output"`
	Bytes   int    `json:"bytes"`
	SHA256  string `json:"sha256"`
	Path    string `json:"path"`
}

func newWorkflowResultCmd() *cobra.Command {
	var storeU, keyFile, outPath, session string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "result --store URL --key INITIATOR.key [--session ID] --output FILE BLOB",
		Short: "Fetch a workflow's output kept with 'workflow run --store', and open it with the initiator's key",
		Long: `result fetches BLOB (sha256:…, as 'workflow run --store' printed) from the
blob store and opens it with the initiator's key. The blob holds the
output exactly as the node's isolate sealed it to the initiator (HPKE:
ML-KEM-768 + X25519, bound to the session, the output's name, the reader
and the policy's hash): the store, its operator and anyone else who
fetches it read only ciphertext, and only the initiator's key opens it.
With --session, the output must be of that workflow.

Exit status: 0 opened and written; 1 not found, or it does not open with
this key; 2 bad usage.`,
		Example: `  cloister workflow result --store http://127.0.0.1:7444/results --key initiator.key \
      --output result.json sha256:4f0c…`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if storeU == "" || keyFile == "" || outPath == "" {
			return usageError("workflow result: --store, --key and --output are required")
		}
		d, err := blob.ParseDigest(args[0])
		if err != nil {
			return usageError("workflow result: %v", err)
		}
		k, err := loadKey(keyFile)
		if err != nil {
			return err
		}
		store, err := blob.OpenStore(storeU, blob.Options{})
		if err != nil {
			return usageError("workflow result: --store: %v", err)
		}
		ctx, stop := signalContext(cmd)
		defer stop()
		pt, sr, err := fetchSealedResult(ctx, store, d, k)
		if err != nil {
			return failure(fmt.Errorf("workflow result: %w", err))
		}
		if session != "" && sr.Session != session {
			return failure(fmt.Errorf("workflow result: %s holds an output of workflow %s, not %s", d, sr.Session, session))
		}
		if err := atomicfile.WriteFile(outPath, pt, 0o600); err != nil {
			return failure(err)
		}
		s := sha256.Sum256(pt)
		r := workflowResult{Blob: d.String(), Session: sr.Session, Output: sr.Output, Bytes: len(pt), SHA256: hex.EncodeToString(s[:]), Path: outPath}
		if asJSON {
			return printJSON(cmd.OutOrStdout(), r)
		}
		fmt.Fprintf(cmd.OutOrStdout(), "%s: output %s of workflow %s, %d bytes, sha256 %s, written to %s\n", r.Blob, r.Output, r.Session, r.Bytes, r.SHA256, r.Path)
		return nil
	}
	cmd.Flags().StringVar(&storeU, "store", "", "the blob store the output was kept in (http://HOST:PORT/REPO)")
	cmd.Flags().StringVar(&keyFile, "key", "", "the initiator's principal key file")
	cmd.Flags().StringVar(&outPath, "output", "", "file the opened output is written to")
	cmd.Flags().StringVar(&session, "session", "", "the workflow the output must be of")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print what was opened as JSON")
	return cmd
}

// fetchSealedResult fetches blob d and opens the sealed result it holds
// with k.
func fetchSealedResult(ctx context.Context, store *blob.Store, d blob.Digest, k *keys.PrivateKey) ([]byte, *client.SealedResult, error) {
	rc, _, err := store.Fetch(ctx, d, maxSealedResultBlob)
	if err != nil {
		return nil, nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxSealedResultBlob+1))
	if err != nil {
		return nil, nil, err
	}
	if blob.FromBytes(b) != d {
		return nil, nil, blob.ErrMismatch
	}
	var sr client.SealedResult
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&sr); err != nil {
		return nil, nil, fmt.Errorf("%s is not a sealed result: %v", d, err)
	}
	pt, err := client.OpenSealedResult(k, &sr)
	if err != nil {
		return nil, nil, err
	}
	return pt, &sr, nil
}
