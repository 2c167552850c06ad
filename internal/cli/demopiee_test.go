package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/testbin"
)

// TestDemoPiee runs "cloister demo piee" with every component a process
// of the test-built binary: the honest nodes pass, the rigged one fails
// and is outvoted as a verifier, the stopped one is unavailable, and
// every verdict is the one recomputed from the signed reveals.
func TestDemoPiee(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a validator and four nodes and runs an epoch of 80 s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if err := runPieeDemo(ctx, &out, &errOut, bin, false); err != nil {
		t.Fatalf("demo: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"test network up", "published 8 operators", "demo: stopped n3", "the validators' VRF shares of the epoch's input", "the draw (checked here from the shares)",
		"committed H(", "revealed Q = ", "verdict on n2: FAIL", "verdict on n3: UNAVAILABLE", "recomputed here from the signed reveals", "console of", "all steps behaved"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
