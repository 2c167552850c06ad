package cli

import (
	"testing"
	"time"
)

// TestDemoMarketplace runs "cloister demo marketplace" with every
// component a process of the test-built binary and checks its steps: the
// network up, the innovator's sealed program listed, the chosen provider
// killed after the consumer attested it, the run completed on the other
// after one failover, the answer right, the dead provider's grant revoked
// and the key released to the session that answered.
func TestDemoMarketplace(t *testing.T) {
	playDemo(t, "starts a test network and compiles a 3 MiB sealed module", 15*time.Minute, runMarketDemo,
		"test network up", "innovator delegated short grants to the dispatcher", "demo: killed provider n1",
		"consumer: assignment 2: attested the isolate myself", `consumer opened count.json {"bytes":114,"lines":4,"words":21} (expected)`,
		"the run completed on n2 after one failover from n1", "the grant to n1 is revoked", "key.released", "shows the failover and the release", "all steps behaved")
}
