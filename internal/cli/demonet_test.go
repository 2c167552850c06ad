package cli

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/testbin"
)

// playDemo plays a demo flow with the test-built binary as every
// component, within limit, and fails unless it behaved and its output
// says each of want. -short skips it, saying why.
func playDemo(t *testing.T, why string, limit time.Duration, play demoPlay, want ...string) {
	t.Helper()
	if testing.Short() {
		t.Skip(why)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	bin, err := testbin.Cloister()
	if err != nil {
		t.Fatal(err)
	}
	var out, errOut strings.Builder
	if err := play(ctx, &out, &errOut, bin, false); err != nil {
		t.Fatalf("demo: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, w := range want {
		if !strings.Contains(out.String(), w) {
			t.Fatalf("demo output lacks %q:\n%s", w, out.String())
		}
	}
}
