package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/testbin"
)

// TestDemoSealedProgram runs "cloister demo sealed-program" and checks its
// steps: the key released by brokers whose entries are committed, the
// right answer from the jailed worker, the release's inclusion proved, the
// request after the revocation refused.
func TestDemoSealedProgram(t *testing.T) {
	if testing.Short() {
		t.Skip("compiles a 3 MiB sealed module")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if err := runSealedDemo(ctx, &out, &errOut, bin, false); err != nil {
		t.Fatalf("demo: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"gave each one share, 2 of 3 needed", "artifact.registered #0", "cloister node --ledger",
		`dave opened count.json {"bytes":114,"lines":4,"words":21} (expected)`, "key.released entries for that session", "is included in the checkpoint", "acl.revoked #",
		"a second session's run is refused", "all steps behaved"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
