package isolate

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestHostileOutputCheat runs a guest that tries, each way it can, to
// hold more than MaxOutput under /output/: every write path (fd_write,
// O_APPEND, fd_pwrite past the end, growing with ftruncate and
// fd_allocate), and handles that stopped being the file of record
// (unlinked, renamed over, shrunk through another handle). Each must end
// as the documented output-limit outcome — the guest refused with ENOSPC
// (or, past the file count, EDQUOT), the run exited, the report naming the
// limit — never more held than the budget, never a trap, a killed worker
// or a worker sending an invalid result. Before the accounting followed
// files rather than names, the unlink, shrink and rename ways made a
// worker with a 1 MiB budget hold gigabytes and die (a trap).
func TestHostileOutputCheat(t *testing.T) {
	const maxOut = 1 << 20
	r := newRuntime(t, Options{})
	for _, tc := range []struct{ mode, stop, limit string }{
		{"write", "No space left on device", LimitMaxOutput},
		{"append", "No space left on device", LimitMaxOutput},
		{"pwrite", "No space left on device", LimitMaxOutput},
		{"grow", "No space left on device", LimitMaxOutput},
		{"allocate", "No space left on device", LimitMaxOutput},
		{"orphans", "No space left on device", LimitMaxOutput},
		{"truncate", "Quota exceeded", LimitMaxOutputFiles},
		{"rename", "No space left on device", LimitMaxOutput},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			res := mustRun(t, r, &Config{Module: hostileGuest(t), Name: "outputcheat", Args: []string{tc.mode},
				MaxOutput: maxOut, Memory: 64 << 20, Timeout: 2 * time.Minute})
			wantOutcome(t, res, OutcomeExited, 0)
			var most, now int64
			var handles int
			if _, err := fmt.Sscanf(string(res.Stdout), "most held %d; now %d; handles %d;", &most, &now, &handles); err != nil {
				t.Fatalf("stdout %q: %v", res.Stdout, err)
			}
			if most > maxOut {
				t.Errorf("the guest held %d bytes at one point, more than max_output %d", most, maxOut)
			}
			if !strings.Contains(string(res.Stdout), tc.stop) {
				t.Errorf("stdout %q: not stopped by %q", res.Stdout, tc.stop)
			}
			if !res.Report.OutputLimited || !strings.Contains(strings.Join(res.Report.OutputLimitsHit, ","), tc.limit) {
				t.Errorf("report: output_limited %v, limits hit %q; want %s", res.Report.OutputLimited, res.Report.OutputLimitsHit, tc.limit)
			}
			var total int64
			for _, o := range res.Report.Outputs {
				total += o.Bytes
			}
			if total > maxOut {
				t.Errorf("outputs hold %d bytes, more than max_output %d", total, maxOut)
			}
		})
	}
}
