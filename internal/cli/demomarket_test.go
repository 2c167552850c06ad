package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/testbin"
)

// TestDemoMarketplace runs "cloister demo marketplace" with every
// component a process of the test-built binary and checks its steps: the
// network up, the innovator's sealed program listed, the chosen provider
// killed after the consumer attested it, the run completed on the other
// after one failover, the answer right, the dead provider's grant revoked
// and the key released to the session that answered.
func TestDemoMarketplace(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a test network and compiles a 3 MiB sealed module")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if err := runMarketDemo(ctx, &out, &errOut, bin, false); err != nil {
		t.Fatalf("demo: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"test network up", "innovator delegated short grants to the dispatcher", "demo: killed provider n1",
		"consumer: assignment 2: attested the isolate myself", `consumer opened count.json {"bytes":114,"lines":4,"words":21} (expected)`,
		"the run completed on n2 after one failover from n1", "the grant to n1 is revoked", "key.released", "shows the failover and the release", "all steps behaved"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("demo output lacks %q:\n%s", want, out.String())
		}
	}
}
