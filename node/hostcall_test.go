package node_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/isolate"
)

// TestHostCallSession: a policy that allows cloister.sha256/v1 runs the
// hostcall example, whose every input's digest comes from the node, in a
// session end to end; a policy naming a call the node does not offer, or a
// nondeterministic call in a deterministic policy, is refused at creation.
func TestHostCallSession(t *testing.T) {
	s := newScenario(t)
	prog, err := examples.Lookup("hostcall")
	if err != nil {
		t.Fatal(err)
	}
	tn := startNode(t, t.TempDir(), nil)
	c := dial(t, tn)
	mutate := func(calls ...string) func(map[string]any) {
		return func(d map[string]any) {
			d["programs"] = []any{map[string]any{"name": "hostcall.wasm", "sha256": sha256hex(prog.Wasm), "provider": "alice"}}
			d["outputs"] = []any{map[string]any{"name": "digests.json", "readers": []string{"dave"}}}
			var hc []any
			for _, name := range calls {
				hc = append(hc, map[string]any{"name": name})
			}
			d["host_calls"] = hc
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	if _, err := c.CreateSession(ctx, s.policyDoc(t, tn.platformKey(), mutate("cloister.nope/v1"))); err == nil || !strings.Contains(err.Error(), "does not offer") {
		t.Errorf("a policy naming a call the node does not offer: %v", err)
	}

	// Compile the module once, bounded apart from the session's limit.
	res, err := runtime.Run(ctx, &isolate.Config{Module: prog.Wasm, Inputs: []isolate.Input{{Name: "x", Data: []byte("x")}},
		HostCalls: isolate.StandardHostCalls(), Timeout: 15 * time.Minute})
	if err != nil || res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
		t.Fatalf("warm-up run: %v %+v", err, res)
	}
	res.Close()

	doc := s.policyDoc(t, tn.platformKey(), mutate("cloister.sha256/v1"))
	as := createAttested(ctx, t, c, doc)
	if _, err := as.UploadProgram(ctx, s.alice.key, "hostcall.wasm", prog.Wasm); err != nil {
		t.Fatal(err)
	}
	inputs := map[string][]byte{"customers.csv": s.input(t, "customers.csv"), "purchases.csv": s.input(t, "purchases.csv")}
	if _, err := as.UploadInput(ctx, s.bob.key, "customers.csv", inputs["customers.csv"]); err != nil {
		t.Fatal(err)
	}
	if _, err := as.UploadInput(ctx, s.carol.key, "purchases.csv", inputs["purchases.csv"]); err != nil {
		t.Fatal(err)
	}
	st, err := as.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != cloisterv1.SessionState_SESSION_STATE_FINISHED {
		t.Fatalf("state %v, reason %q, report %v", st.State, st.Reason, st.Report)
	}
	got, err := as.Result(ctx, s.dave.key, "digests.json")
	if err != nil {
		t.Fatal(err)
	}
	var digests []struct{ Name, SHA256 string }
	if err := json.Unmarshal(got, &digests); err != nil {
		t.Fatal(err)
	}
	if len(digests) != 2 {
		t.Fatalf("digests.json = %s", got)
	}
	for _, d := range digests {
		sum := sha256.Sum256(inputs[d.Name])
		if d.SHA256 != hex.EncodeToString(sum[:]) {
			t.Errorf("%s: digest %s, want %x", d.Name, d.SHA256, sum)
		}
	}
}
