package federation_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/model"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// heldLedger passes everything to the ledger but holds receipt batches
// until open is closed, as a slow or unreachable ledger would.
type heldLedger struct {
	*lclient.Client
	open chan struct{}
}

func (l *heldLedger) AppendBatch(ctx context.Context, es []*verify.SignedEntry, wait bool) ([]lclient.BatchResult, error) {
	select {
	case <-l.open:
		return l.Client.AppendBatch(ctx, es, wait)
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// The holder releases a result without waiting for the ledger: its
// receipt is signed and on the holder's disk first, and committed in the
// background. The initiator's side settles a workflow only once every
// receipt is on the ledger as given: a receipt the ledger refuses (the
// model was revoked in between) fails it, so the run would release no
// output. Receipts a holder had not committed when it stopped are sent
// by the next one that opens its directory.
func TestReceiptsAfterRelease(t *testing.T) {
	held := &heldLedger{open: make(chan struct{})}
	w := newWorldWith(t, 30, nil, func(c *lclient.Client) federation.Ledger { held.Client = c; return held })
	args := map[string]any{"column": "age", "op": ">=", "value": 0}

	// Answered while no receipt can reach the ledger.
	a, err := w.call("count", args)
	if err != nil {
		t.Fatal(err)
	}
	if a.Receipt != 0 || len(a.Call) != 64 {
		t.Fatalf("answer: %+v", a)
	}
	// The holder stops before committing; a new holder on its directory
	// sends the receipt.
	w.holder.Close()
	opts := w.holderOpts
	opts.Ledger = held.Client
	h2, err := federation.NewHolder(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer h2.Close()
	e := w.receipt(a, testWorkflow)
	if c, err := model.DecodeCall(e.Signed.Entry.Body); err != nil || c.ID != a.Call {
		t.Fatalf("receipt %d: %+v %v", e.Index, c, err)
	}

	// A receipt the ledger refuses fails the workflow's settlement: the
	// call is answered (by the holder that stopped committing), the model
	// revoked, and the next holder's commit of the receipt refused.
	const wf = "fedcba9876543210fedcba9876543210"
	if _, err := w.caller.Call(context.Background(), federation.Origin{Initiator: w.initiator, Workflow: wf},
		&federation.Request{Model: "hospital-a/stats", Function: "count", Args: []byte(`{"column":"age","op":">=","value":0}`)}); err != nil {
		t.Fatal(err)
	}
	w.append(w.org, ledger.KindModelRevoked, model.Revocation{Name: "hospital-a/stats", Version: 1})
	h2.Close()
	h3, err := federation.NewHolder(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer h3.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = w.caller.Settle(ctx, wf)
	if err == nil || !strings.Contains(err.Error(), "the ledger refused it") || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("settle after a refused receipt: %v", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatal(err)
	}
}
