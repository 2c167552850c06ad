package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/internal/fedexample"
	"github.com/cloisterhq/cloister/internal/fedexample/fedmodel"
	"github.com/cloisterhq/cloister/internal/testnet"
	"github.com/cloisterhq/cloister/keys"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
)

func newDemoFederationCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "federation",
		Short: "Play seed 001's federated computation: three hospitals, one initiator, a logistic regression on data that never moves",
		Long: `federation plays seed 001's flow on a test network of separate processes
('cloister testnet': a validator, and four nodes started with --federation,
one per organisation: hospital-a, hospital-b, hospital-c and research),
printing each step with its time:

  hospitals   each registers its synthetic patients (generated here, one
              canary row planted in each) with its own node ('cloister
              dataset add') and publishes the model examples/hospital on
              the ledger ('cloister model publish'): count, histogram, one
              round of logistic-regression gradient and Hessian, evaluate;
              aggregates over at least 5 patients only; callable by the
              research initiator; hospital-c's model is in manual
              approval mode: research requests a plan ('cloister approval
              request') and a person of hospital-c lists and grants it
              ('cloister approval list', 'cloister approval grant')
  research    runs its total model examples/fedlogreg on its own node
              ('cloister workflow run --dag'): 10 Newton rounds over the
              three hospitals under a compute plan (each round's
              gradients after the previous round's), every call audited
              and answered by the hospital's node, with a receipt on the
              ledger; the answer comes back sealed to the initiator once
              the run's call graph is recorded on the ledger
              ('cloister workflow status --ledger' proves it); the answer
              is also kept in the network's blob store sealed to the
              initiator, and fetched and opened again ('cloister workflow
              result'): hospital-a's key cannot open it
  demo        checks the coefficients against a centralised fit on the
              pooled rows (each within 1e-3) and the accuracy (within 0.5
              points), that every receipt rests on at least 5 rows and
              names the workflow, that no canary appears in the answer, on
              the ledger or anywhere in the research node's data
  attacks     a histogram with a bin of fewer than 5 patients is refused
              by the hospital's output rule; after hospital-a revokes its
              model, the workflow fails with a clear error

Exit status: 0 every step behaved; 1 otherwise.`,
		Example: `  cloister demo federation`,
		Args:    cobra.NoArgs,
	}
	return componentsDemo(cmd, "tell the test network's events on standard error", runFederationDemo)
}

var demoHospitals = []string{"hospital-a", "hospital-b", "hospital-c"}

// demoManual is the hospital whose model is in manual approval mode.
const demoManual = "hospital-c"

const demoPatients = 200

// runFederationDemo plays the federation demo with self as every
// component's binary.
func runFederationDemo(ctx context.Context, out, errOut io.Writer, self string, verbose bool) error {
	ctx, stage, end, err := stageDemo(ctx, out, errOut, verbose, "federation", 20*time.Minute)
	if err != nil {
		return err
	}
	defer end()
	pr, dir := stage.pr, stage.dir
	events := stage.events
	var nodes []testnet.NodeSpec
	for _, h := range append(append([]string{}, demoHospitals...), "research") {
		nodes = append(nodes, testnet.NodeSpec{Name: h, Organisation: h, Args: []string{"--federation"}})
	}
	nw, err := testnet.Start(ctx, testnet.Options{Dir: filepath.Join(dir, "net"), Bin: self, Nodes: nodes, NoBroker: true,
		NoDispatcher: true, Out: events, Label: "cloister demo"})
	if err != nil {
		return err
	}
	defer nw.Stop()
	info := nw.Info()
	lc := nw.Ledger()
	url, orgKey, data := map[string]string{}, map[string]string{}, map[string]string{}
	for _, n := range info.Nodes {
		url[n.Name], data[n.Name] = n.URL, n.Data
	}
	for _, o := range info.Organisations {
		orgKey[o.Name] = o.KeyFile
	}
	pr.step("test network up, each component a process: validator %s, nodes %s %s %s %s, each run by its own organisation",
		info.LedgerURL, url["hospital-a"], url["hospital-b"], url["hospital-c"], url["research"])

	run := func(args ...string) (string, error) {
		c := exec.CommandContext(ctx, self, args...)
		var o, e bytes.Buffer
		c.Stdout, c.Stderr = &o, &e
		if err := c.Run(); err != nil {
			return "", fmt.Errorf("cloister %s %s: %v: %s", args[0], args[1], err, strings.TrimSpace(e.String()))
		}
		return strings.TrimSpace(o.String()), nil
	}
	// The initiator is the research organisation's key, which may also
	// keep blobs in the network's store (its answer, sealed to it).
	initiatorFile := orgKey["research"]
	ik, err := keys.Load(initiatorFile)
	if err != nil {
		return err
	}
	initiator := ik.Public().SigningString()
	pr.step("research: its organisation's key is the initiator, %s", initiator)

	hosp, err := examples.Lookup("hospital")
	if err != nil {
		return err
	}
	hospWasm := filepath.Join(dir, "hospital.wasm")
	if err := os.WriteFile(hospWasm, hosp.Wasm, 0o600); err != nil {
		return err
	}
	var pooled []fedexample.Patient
	for i, h := range demoHospitals {
		csv := fedexample.Generate(h, uint64(i+1), demoPatients)
		rows, err := fedexample.Parse(bytes.NewReader(csv))
		if err != nil {
			return err
		}
		pooled = append(pooled, rows...)
		path := filepath.Join(dir, h+"-patients.csv")
		if err := os.WriteFile(path, csv, 0o600); err != nil {
			return err
		}
		if _, err := run("dataset", "add", "--node", url[h], "--key", orgKey[h], "patients.csv", path); err != nil {
			return err
		}
		os.Remove(path) // from here on, only the hospital's node holds it
		m := fedmodel.Hospital(h+"/stats", 0, hosp.Wasm, nil, initiator)
		m.Output.Budget = 100
		if h == demoManual {
			// This hospital wants a person to approve each plan.
			m.Approval.Mode = model.ApprovalManual
		}
		spec, _ := json.MarshalIndent(m, "", "  ")
		specPath := filepath.Join(dir, h+"-model.json")
		if err := os.WriteFile(specPath, spec, 0o600); err != nil {
			return err
		}
		o, err := run("model", "publish", "--node", url[h], "--key", orgKey[h], "--spec", specPath, "--program", hospWasm)
		if err != nil {
			return err
		}
		pr.step("%s: %d patients (one canary row) registered with its own node; %s", h, demoPatients, o)
	}
	o, err := run("model", "list", "--ledger", info.LedgerURL, "--json")
	if err != nil {
		return err
	}
	var ml lclient.ModelList
	if err := json.Unmarshal([]byte(o), &ml); err != nil || len(ml.Models) != len(demoHospitals) {
		return fmt.Errorf("model list: %d models, want %d: %v", len(ml.Models), len(demoHospitals), err)
	}
	pr.step("ledger: %d models published — functions count, histogram, gradient, evaluate; min_rows %d; program %s…",
		len(ml.Models), fedmodel.MinRows, ml.Models[0].ProgramSHA256[:16])

	fl, err := examples.Lookup("fedlogreg")
	if err != nil {
		return err
	}
	total := filepath.Join(dir, "fedlogreg.wasm")
	if err := os.WriteFile(total, fl.Wasm, 0o600); err != nil {
		return err
	}
	const rounds = 10
	// hospital-c's model is in manual approval mode: research asks for a
	// plan — this total model, the four functions, one call each of
	// count, histogram and evaluate and one gradient per round — and a
	// person of hospital-c approves it.
	o, err = run("approval", "request", "--node", url[demoManual], "--key", initiatorFile, "--model", demoManual+"/stats", "--total", total,
		"--function", "count", "--function", "histogram", "--function", "gradient", "--function", "evaluate",
		"--calls", strconv.Itoa(rounds+3), "--expires", "1h", "--json")
	if err != nil {
		return err
	}
	var plan federation.PlanRecord
	if err := json.Unmarshal([]byte(o), &plan); err != nil || plan.State != federation.PlanPending {
		return fmt.Errorf("approval request: want a pending plan: %s %v", o, err)
	}
	o, err = run("approval", "list", "--node", url[demoManual], "--key", orgKey[demoManual], "--json")
	if err != nil {
		return err
	}
	var pending []federation.PlanRecord
	if err := json.Unmarshal([]byte(o), &pending); err != nil || len(pending) != 1 || pending[0].ID != plan.ID {
		return fmt.Errorf("approval list: want plan %s pending: %s %v", plan.ID, o, err)
	}
	if _, err := run("approval", "grant", "--node", url[demoManual], "--key", orgKey[demoManual], plan.ID); err != nil {
		return err
	}
	pr.step("%s approves by hand: research requested plan %s… (fedlogreg.wasm, 4 functions, %d calls, 1 h); a person listed it and granted it",
		demoManual, plan.ID[:12], rounds+3)
	planPath := filepath.Join(dir, "plan.json")
	writePlan := func(edges []float64) error {
		var models []string
		for _, h := range demoHospitals {
			models = append(models, h+"/stats")
		}
		b, _ := json.Marshal(map[string]any{"models": models, "rounds": rounds, "histogram": map[string]any{"column": "age", "edges": edges}})
		return os.WriteFile(planPath, b, 0o600)
	}
	if err := writePlan([]float64{18, 40, 50, 60, 96}); err != nil {
		return err
	}
	// The total model's calls as a compute plan: each round's gradients
	// after the previous round's, the evaluations after the last round.
	dag := fedlogregDAG(demoHospitals, rounds)
	dagJSON, _ := json.MarshalIndent(dag, "", "  ")
	dagPath := filepath.Join(dir, "fedlogreg.dag.json")
	if err := os.WriteFile(dagPath, dagJSON, 0o600); err != nil {
		return err
	}
	edges := 0
	for _, t := range dag.Tasks {
		edges += len(t.After)
	}
	pr.step("research writes its compute plan: %d tasks, %d edges (each round's gradients after the previous round's, the evaluations after the last), sha256 %s…",
		len(dag.Tasks), edges, federation.DAGDigest(dagJSON)[:12])
	outDir := filepath.Join(dir, "out")
	// The attacks below run without the plan: fedlogreg reports a refused
	// call in result.json, which a run under a plan it stopped short of
	// would not release at all.
	unplanned := []string{"workflow", "run", "--node", url["research"], "--key", initiatorFile, "--input", "plan.json=" + planPath,
		"--output-dir", outDir, "--json", total}
	if info.BlobStore == nil {
		return errors.New("the test network runs no blob store")
	}
	store := info.BlobStore.URL + "/results"
	workflow := append(slices.Clone(unplanned[:len(unplanned)-4]), "--dag", dagPath, "--store", store, "--output-dir", outDir, "--json", total)
	o, err = run(workflow...)
	if err != nil {
		return fmt.Errorf("%w\nthe nodes' federation log:\n%s", err, federationLog(info))
	}
	var wr workflowRun
	if err := json.Unmarshal([]byte(o), &wr); err != nil {
		return fmt.Errorf("workflow run --json: %v", err)
	}
	resultJSON, err := os.ReadFile(filepath.Join(outDir, "result.json"))
	if err != nil {
		return err
	}
	var res struct {
		Coefficients []float64 `json:"coefficients"`
		Accuracy     float64   `json:"accuracy"`
		Rows         int       `json:"rows"`
		Positives    int       `json:"positives"`
		Histogram    []int     `json:"histogram"`
		Calls        []string  `json:"calls"`
	}
	if err := json.Unmarshal(resultJSON, &res); err != nil {
		return fmt.Errorf("result.json: %v", err)
	}
	calls := len(demoHospitals) * (2 + rounds + 1)
	pr.step("research: workflow %s ran on its node in %d ms: %d sub-model calls, answer sealed to the initiator and opened",
		wr.Session, wr.WallMS, len(res.Calls))
	pr.note("coefficients %s, accuracy %.4f over %d patients (%d positive)", fmtFloats(res.Coefficients), res.Accuracy, res.Rows, res.Positives)

	// The answer, against a centralised fit on the pooled rows.
	central, err := fedexample.Fit(pooled, 25)
	if err != nil {
		return err
	}
	worst := 0.0
	for i := range central {
		if i >= len(res.Coefficients) {
			return fmt.Errorf("result: %d coefficients, want %d", len(res.Coefficients), len(central))
		}
		worst = math.Max(worst, math.Abs(res.Coefficients[i]-central[i]))
	}
	cacc := float64(fedexample.Correct(pooled, central)) / float64(len(pooled))
	if worst > 1e-3 || math.Abs(res.Accuracy-cacc) > 0.005 || res.Rows != len(pooled) || len(res.Calls) != calls {
		return fmt.Errorf("answer: coefficients %v vs centralised %v (worst %.2g), accuracy %.4f vs %.4f, %d rows, %d calls (want %d)",
			res.Coefficients, central, worst, res.Accuracy, cacc, res.Rows, len(res.Calls), calls)
	}
	pr.step("check: every coefficient within %.1g of the centralised fit %s; accuracy %.4f vs %.4f", worst, fmtFloats(central), res.Accuracy, cacc)

	// The workflow's outputs were released only once every call's receipt
	// was on the ledger: the research node lists them with their indices.
	o, err = run("workflow", "status", "--ledger", info.LedgerURL, "--state", filepath.Join(dir, "ledger-state.json"),
		"--json", wr.Session)
	if err != nil {
		return err
	}
	var wf workflowStatus
	if err := json.Unmarshal([]byte(o), &wf); err != nil || len(wf.Calls) != calls {
		return fmt.Errorf("workflow status: %d calls, want %d: %v", len(wf.Calls), calls, err)
	}
	if err := checkRecordedGraph(&wf, dag, federation.DAGDigest(dagJSON)); err != nil {
		return fmt.Errorf("workflow status: %w", err)
	}
	made := map[string]bool{}
	for _, id := range res.Calls {
		made[id] = true
	}
	// Every receipt: a model.called by a hospital's node, for this
	// workflow, resting on at least min_rows rows, with no canary.
	for _, wc := range wf.Calls {
		if !made[wc.Call] || wc.IncludedIn == 0 {
			return fmt.Errorf("workflow status: call %s is not one the total model made, or its receipt is not proved", wc.Call)
		}
		idx := wc.Receipt
		e, err := lc.Get(ctx, idx)
		if err != nil {
			return fmt.Errorf("receipt %d: %w", idx, err)
		}
		c, err := model.DecodeCall(e.Signed.Entry.Body)
		if err != nil || e.Signed.Entry.Kind != model.KindCalled || c.ID != wc.Call || c.Workflow != wr.Session || c.Rows < fedmodel.MinRows || c.Initiator != initiator {
			return fmt.Errorf("receipt %d: %s %+v %v", idx, e.Signed.Entry.Kind, c, err)
		}
		if bytes.Contains(e.Tx, []byte("CANARY")) {
			return fmt.Errorf("receipt %d carries a canary", idx)
		}
	}
	pr.step("check: %d model.called receipts on the ledger, each signed by the hospital's node, naming workflow %s…, every one over ≥ %d rows",
		len(wf.Calls), wr.Session[:12], fedmodel.MinRows)
	pr.step("workflow status: the call graph recorded on the ledger (entry %d, signed by the research node) lists the same %d calls with their tasks in dependency order; it and each receipt proved included in the verified ledger",
		wf.Recorded, len(wf.Calls))
	if bytes.Contains(resultJSON, []byte("CANARY")) {
		return errors.New("the answer carries a canary row")
	}
	if f, err := findIn(data["research"], []byte("CANARY")); err != nil || f != "" {
		return fmt.Errorf("the research node's data holds a canary (%s) or could not be read: %v", f, err)
	}
	if f, err := findIn(outDir, []byte("CANARY")); err != nil || f != "" {
		return fmt.Errorf("the initiator's outputs hold a canary (%s): %v", f, err)
	}
	pr.step("check: no hospital's canary row in the answer, in any receipt, or anywhere in the research node's data directory")

	// The answer kept in the blob store, sealed to the initiator: only its
	// key opens it later; the store holds only ciphertext.
	if err := storedResultOpens(run, dir, store, initiatorFile, orgKey["hospital-a"], &wr, resultJSON, info.BlobStore.Data); err != nil {
		return err
	}
	pr.step("research fetched its answer again from the blob store (%s…), sealed to it by its node's isolate: it opens with the initiator's key alone — hospital-a's key fails, and the store's disk holds no plaintext",
		wr.Outputs[0].Stored[:19])

	// Attack: a histogram one of whose bins holds fewer than 5 patients.
	edge := narrowEdge(pooled[:demoPatients])
	if err := writePlan([]float64{18, edge, 96}); err != nil {
		return err
	}
	if msg, err := workflowError(run, unplanned, outDir); err != nil || !strings.Contains(msg, "output rule") {
		return fmt.Errorf("a histogram with a bin under %d patients: want the output rule's refusal, got %q, %v", fedmodel.MinRows, msg, err)
	}
	pr.step("attack: a histogram of age with a bin [18, %g) of fewer than %d patients — refused by hospital-a's output rule, the workflow failed", edge, fedmodel.MinRows)

	// Attack: hospital-a revokes its model; the workflow fails clearly.
	if _, err := run("model", "revoke", "--ledger", info.LedgerURL, "--key", orgKey["hospital-a"], "--version", "1", "hospital-a/stats"); err != nil {
		return err
	}
	if err := writePlan([]float64{18, 40, 50, 60, 96}); err != nil {
		return err
	}
	if msg, err := workflowError(run, unplanned, outDir); err != nil || !strings.Contains(msg, "revoked") {
		return fmt.Errorf("after revocation: want a failure naming the revocation, got %q, %v", msg, err)
	}
	pr.step("attack: hospital-a revoked its model on the ledger — the next workflow failed: its model was revoked by its owner")

	// The research node's console, as a viewer reads it.
	consoleURL := ""
	for _, n := range info.Nodes {
		if n.Name == "research" {
			consoleURL = n.Console
		}
	}
	if err := federationConsoleShows(ctx, consoleURL, "hospital-a/stats", calls); err != nil {
		return err
	}
	pr.step("console of research shows the published models with their schemas, the revocation and the call receipts, and no canary: %smodels", consoleURL)

	// hospital-c's console lists the plans its node received: one more,
	// awaiting a person, beside the one granted, each with its functions,
	// budget and expiry, and the command that decides it (the console
	// holds no organisation key).
	o, err = run("approval", "request", "--node", url[demoManual], "--key", initiatorFile, "--model", demoManual+"/stats", "--total", total,
		"--function", "count", "--calls", "2", "--expires", "2h", "--json")
	if err != nil {
		return err
	}
	var second federation.PlanRecord
	if err := json.Unmarshal([]byte(o), &second); err != nil || second.State != federation.PlanPending {
		return fmt.Errorf("approval request: want a pending plan: %s %v", o, err)
	}
	cConsole := ""
	for _, n := range info.Nodes {
		if n.Name == demoManual {
			cConsole = n.Console
		}
	}
	if err := plansConsoleShows(ctx, cConsole, second.ID, plan.ID); err != nil {
		return err
	}
	pr.step("console of %s shows plan %s… awaiting a person (count, 2 calls, 2 h) with the command that grants it, and plan %s… granted: %splans",
		demoManual, second.ID[:12], plan.ID[:12], cConsole)
	pr.step("all steps behaved")
	fmt.Fprintf(out, "total %.2f s\n", time.Since(pr.start).Seconds())
	return nil
}

// federationConsoleShows checks a node's console models page: revoked is
// shown revoked, the models' calls add up to at least calls, and neither
// the page nor its JSON carries a hospital's canary row. The console's
// explorer follows the ledger, so this waits (bounded) for it.
func federationConsoleShows(ctx context.Context, base, revoked string, calls int) error {
	if base == "" {
		return errors.New("console: the research node has no console")
	}
	return awaitConsole(ctx, base, func(ctx context.Context) error {
		var d struct {
			Models []struct {
				Name    string `json:"name"`
				Revoked uint64 `json:"revoked"`
				Calls   uint64 `json:"calls"`
			} `json:"models"`
			Recent []struct {
				Kind string `json:"kind"`
			} `json:"recent_entries"`
		}
		raw, err := consoleGet(ctx, base, "api/models", &d)
		if err != nil {
			return err
		}
		page, err := consoleGet(ctx, base, "models", nil)
		if err != nil {
			return err
		}
		var total uint64
		isRevoked := false
		for _, m := range d.Models {
			total += m.Calls
			isRevoked = isRevoked || m.Name == revoked && m.Revoked != 0
		}
		receipts := 0
		for _, e := range d.Recent {
			if e.Kind == model.KindCalled {
				receipts++
			}
		}
		switch {
		case !isRevoked:
			return fmt.Errorf("the models page does not show %s revoked", revoked)
		case total < uint64(calls) || receipts == 0:
			return fmt.Errorf("the models page counts %d calls and lists %d receipts, want at least %d calls", total, receipts, calls)
		case bytes.Contains(raw, []byte("CANARY")) || bytes.Contains(page, []byte("CANARY")):
			return errors.New("the models page carries a canary row")
		case !bytes.Contains(page, []byte("revoked")) || !bytes.Contains(page, []byte("JSON Schema")):
			return errors.New("the models page does not show the revocation or the functions' schemas")
		}
		return nil
	})
}

// workflowError runs the workflow and returns the error its total model
// reported in result.json (fedlogreg reports a failed call so, with no
// coefficients).
func workflowError(run func(...string) (string, error), workflow []string, outDir string) (string, error) {
	if _, err := run(workflow...); err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(outDir, "result.json"))
	if err != nil {
		return "", err
	}
	var r struct {
		Error        string    `json:"error"`
		Coefficients []float64 `json:"coefficients"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return "", err
	}
	if r.Coefficients != nil {
		return "", errors.New("the failed workflow reported coefficients")
	}
	return r.Error, nil
}

// federationLog returns the nodes' log lines about federation.
func federationLog(info testnet.Info) string {
	var b strings.Builder
	for _, n := range info.Nodes {
		raw, _ := os.ReadFile(n.Log)
		for _, l := range strings.Split(string(raw), "\n") {
			if strings.Contains(l, "federation") || strings.Contains(l, "level=ERROR") {
				fmt.Fprintf(&b, "  %s: %s\n", n.Name, l)
			}
		}
	}
	return b.String()
}

// narrowEdge returns an age e such that between 1 and MinRows-1 of rows
// have age in [18, e).
func narrowEdge(rows []fedexample.Patient) float64 {
	for e := 19.0; e < 60; e++ {
		n := 0
		for i := range rows {
			if rows[i].Age >= 18 && rows[i].Age < e {
				n++
			}
		}
		if n >= 1 && n < fedmodel.MinRows {
			return e
		}
	}
	return 19
}

// findIn returns the first file under dir that contains needle.
func findIn(dir string, needle []byte) (string, error) {
	found := ""
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || found != "" {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if bytes.Contains(b, needle) {
			found = p
		}
		return nil
	})
	return found, err
}

func fmtFloats(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%.4f", x)
	}
	return "[" + strings.Join(s, " ") + "]"
}

// fedlogregDAG is the compute plan of examples/fedlogreg's calls over
// hospitals: a count and a histogram of each, rounds of gradients each
// after the previous round's, and evaluations after the last round.
func fedlogregDAG(hospitals []string, rounds int) federation.DAG {
	var d federation.DAG
	var prev []string
	for _, h := range hospitals {
		d.Tasks = append(d.Tasks, federation.Task{Name: "count-" + h, Model: h + "/stats", Function: "count"},
			federation.Task{Name: "histogram-" + h, Model: h + "/stats", Function: "histogram"})
	}
	for r := 1; r <= rounds; r++ {
		var this []string
		for _, h := range hospitals {
			name := fmt.Sprintf("gradient-%d-%s", r, h)
			d.Tasks = append(d.Tasks, federation.Task{Name: name, Model: h + "/stats", Function: "gradient", After: prev})
			this = append(this, name)
		}
		prev = this
	}
	for _, h := range hospitals {
		d.Tasks = append(d.Tasks, federation.Task{Name: "evaluate-" + h, Model: h + "/stats", Function: "evaluate", After: prev})
	}
	return d
}

// checkRecordedGraph checks a workflow's recorded call graph against its
// plan: recorded, under this plan, every task made once, and each call
// after exactly the calls of its task's predecessors.
func checkRecordedGraph(wf *workflowStatus, dag federation.DAG, sum string) error {
	if wf.Recorded == 0 || wf.RecordIncludedIn == 0 || wf.DAG != sum {
		return fmt.Errorf("no call graph proved on the ledger under plan %s (record %d, plan %s)", sum, wf.Recorded, wf.DAG)
	}
	if len(wf.Calls) != len(dag.Tasks) {
		return fmt.Errorf("%d calls recorded for %d tasks", len(wf.Calls), len(dag.Tasks))
	}
	pos := map[string]int{}
	for i, c := range wf.Calls {
		pos[c.Task] = i
	}
	for _, t := range dag.Tasks {
		i, ok := pos[t.Name]
		if !ok {
			return fmt.Errorf("task %s has no recorded call", t.Name)
		}
		c := wf.Calls[i]
		var want []int
		for _, a := range t.After {
			want = append(want, pos[a])
		}
		slices.Sort(want)
		if c.Model != t.Model || c.Function != t.Function || !slices.Equal(c.After, want) || c.IncludedIn == 0 {
			return fmt.Errorf("task %s: recorded as %s.%s after %v, want %s.%s after %v", t.Name, c.Model, c.Function, c.After, t.Model, t.Function, want)
		}
	}
	return nil
}

// storedResultOpens checks that the answer 'workflow run --store' kept
// opens with the initiator's key into the answer it got, fails with
// another party's key, and is not in plaintext on the store's disk.
func storedResultOpens(run func(...string) (string, error), dir, store, initiatorKey, otherKey string, wr *workflowRun, answer []byte, storeData string) error {
	if len(wr.Outputs) != 1 || wr.Outputs[0].Stored == "" {
		return fmt.Errorf("workflow run --store: outputs %+v, want result.json stored", wr.Outputs)
	}
	d := wr.Outputs[0].Stored
	got := filepath.Join(dir, "fetched-result.json")
	if _, err := run("workflow", "result", "--store", store, "--key", initiatorKey, "--session", wr.Session, "--output", got, d); err != nil {
		return err
	}
	if b, err := os.ReadFile(got); err != nil || !bytes.Equal(b, answer) {
		return fmt.Errorf("workflow result: the stored answer is not the one the run gave (%v)", err)
	}
	other := filepath.Join(dir, "stolen-result.json")
	if _, err := run("workflow", "result", "--store", store, "--key", otherKey, "--output", other, d); err == nil || !strings.Contains(err.Error(), "opening") {
		return fmt.Errorf("workflow result with another party's key: want a failure to open, got %v", err)
	}
	if _, err := os.Stat(other); err == nil {
		return errors.New("workflow result with another party's key wrote a file")
	}
	if f, err := findIn(storeData, []byte(`"coefficients"`)); err != nil || f != "" {
		return fmt.Errorf("the blob store's disk holds the answer in plaintext (%s): %v", f, err)
	}
	return nil
}

// plansConsoleShows checks a holder's console lists plan pending and
// plan granted, in its JSON and its page.
func plansConsoleShows(ctx context.Context, base, pending, granted string) error {
	if base == "" {
		return errors.New("console: the node has no console")
	}
	return awaitConsole(ctx, base, func(ctx context.Context) error {
		var d federation.PlansPage
		if _, err := consoleGet(ctx, base, "api/plans", &d); err != nil {
			return err
		}
		page, err := consoleGet(ctx, base, "plans", nil)
		if err != nil {
			return err
		}
		switch {
		case len(d.Pending) != 1 || d.Pending[0].ID != pending || len(d.Pending[0].Plan.Functions) != 1 || d.Pending[0].Plan.Calls != 2 || d.Pending[0].Plan.Expires == "":
			return fmt.Errorf("the plans page lists %+v awaiting a person, want plan %s for count, 2 calls", d.Pending, pending)
		case len(d.Decided) != 1 || d.Decided[0].ID != granted || d.Decided[0].State != federation.PlanApproved:
			return fmt.Errorf("the plans page lists %+v decided, want plan %s approved", d.Decided, granted)
		case !bytes.Contains(page, []byte("cloister approval grant --node URL --key ORGANISATION.key "+pending)):
			return errors.New("the plans page does not show the command that grants the pending plan")
		}
		return nil
	})
}
