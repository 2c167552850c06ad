package isolate

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// testCalls are the host calls of the tests: an echo (deterministic,
// requests and responses up to 300000 bytes), a call that fails, and one
// that answers only when the run's context ends (blocked counts those).
func testCalls(blocked *atomic.Int64) map[string]HostCall {
	return map[string]HostCall{
		"cloister.test.echo/v1": {Handle: func(_ context.Context, req []byte) ([]byte, error) { return req, nil },
			MaxRequest: 300_000, MaxResponse: 300_000, Deterministic: true},
		"cloister.test.fail/v1": {Handle: func(context.Context, []byte) ([]byte, error) {
			return nil, errors.New("no reason at all")
		}},
		"cloister.test.block/v1": {Handle: func(ctx context.Context, _ []byte) ([]byte, error) {
			<-ctx.Done()
			blocked.Add(1)
			return nil, ctx.Err()
		}},
	}
}

// TestHostCalls: a guest's calls reach the job's handlers and come back
// (long responses through the response function), and everything the job
// does not allow, is too large, fails or points outside the guest's memory
// comes back as its status — in a worker and in process.
func TestHostCalls(t *testing.T) {
	var blocked atomic.Int64
	for _, inproc := range []bool{false, true} {
		r := newRuntime(t, Options{InProcess: inproc, InProcessNoCancel: inproc})
		for _, tc := range []struct {
			args  []string
			want  string
			calls int64
		}{
			{[]string{"echo", "10"}, "echo 10 ok", 1},
			{[]string{"echo", "0"}, "echo 0 ok", 1},
			{[]string{"echo", "200000"}, "echo 200000 ok", 1},
			{[]string{"toolarge", "300001"}, "toolarge 300001 too large", 0},
			{[]string{"notallowed"}, "notallowed: true guest: the host call is not allowed for this program: cloister.test.secret/v1", 0},
			{[]string{"fail"}, "fail: true guest: host call cloister.test.fail/v1 failed: no reason at all", 1},
			{[]string{"badptr"}, fmt.Sprintf("badptr: status %d", HostCallBadArgument), 0},
			{[]string{"flood", "50"}, "flood 50 ok", 50},
		} {
			t.Run(fmt.Sprintf("inprocess=%v/%s", inproc, strings.Join(tc.args, "-")), func(t *testing.T) {
				res := mustRun(t, r, &Config{Module: hostileGuest(t), Name: "hostcall", Args: tc.args,
					HostCalls: testCalls(&blocked), Timeout: time.Minute})
				wantOutcome(t, res, OutcomeExited, 0)
				if got := strings.TrimSpace(string(res.Stdout)); got != tc.want {
					t.Errorf("the guest says %q, want %q", got, tc.want)
				}
				if res.Report.HostCalls != tc.calls {
					t.Errorf("report: %d host calls, want %d", res.Report.HostCalls, tc.calls)
				}
			})
		}
	}
}

// TestHostCallDeadline: a handler's context ends with the run's deadline,
// and a call that never returns does not keep the run past it: the run
// comes back as a timeout (mustRun bounds the wait), with the handler's
// context ended. No wall-clock bound: building and compiling the guest
// (done first here, outside the run) take what a loaded machine gives them.
func TestHostCallDeadline(t *testing.T) {
	// In process without the engine's own cancellation only the call's
	// deadline ends the run: a guest answered with a failure would exit 0.
	for _, inproc := range []bool{false, true} {
		t.Run(fmt.Sprintf("inprocess=%v", inproc), func(t *testing.T) {
			var blocked atomic.Int64
			r := newRuntime(t, Options{InProcess: inproc, InProcessNoCancel: inproc})
			guest := hostileGuest(t)
			mustRun(t, r, &Config{Module: guest, Name: "hostcall", Args: []string{"echo", "1"},
				HostCalls: testCalls(&blocked), Timeout: time.Minute})
			res := mustRun(t, r, &Config{Module: guest, Name: "hostcall", Args: []string{"block"},
				HostCalls: testCalls(&blocked), Timeout: 2 * time.Second})
			wantOutcome(t, res, OutcomeTimeout, ExitTimeout)
			if len(res.Stdout) != 0 {
				t.Errorf("the guest went on after the deadline: %q", res.Stdout)
			}
			if blocked.Load() != 1 {
				t.Errorf("%d handlers saw their context end, want 1", blocked.Load())
			}
		})
	}
}

// TestHostCallsThrottled: a guest calling faster than CallRate is slowed
// down to it (after a burst), not failed.
func TestHostCallsThrottled(t *testing.T) {
	var blocked atomic.Int64
	r := newRuntime(t, Options{})
	start := time.Now()
	res := mustRun(t, r, &Config{Module: hostileGuest(t), Name: "hostcall", Args: []string{"flood", "300"},
		HostCalls: testCalls(&blocked), CallRate: 100, Timeout: time.Minute})
	took := time.Since(start)
	wantOutcome(t, res, OutcomeExited, 0)
	if string(res.Stdout) != "flood 300 ok\n" || res.Report.HostCalls != 300 {
		t.Fatalf("stdout %q, %d calls", res.Stdout, res.Report.HostCalls)
	}
	// 100 at once, then 200 at 100 a second.
	if took < 1900*time.Millisecond {
		t.Errorf("300 calls at 100 a second (burst %d) took %v", callBurst, took)
	}
}

// TestHostCallConfig: calls are checked before anything runs.
func TestHostCallConfig(t *testing.T) {
	r := newRuntime(t, Options{InProcess: true})
	h := func(context.Context, []byte) ([]byte, error) { return nil, nil }
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"bad name":          {Config{HostCalls: map[string]HostCall{"Echo": {Handle: h}}}, "dotted lower-case"},
		"no version":        {Config{HostCalls: map[string]HostCall{"cloister.echo": {Handle: h}}}, "dotted lower-case"},
		"no handler":        {Config{HostCalls: map[string]HostCall{"cloister.echo/v1": {}}}, "no handler"},
		"too large":         {Config{HostCalls: map[string]HostCall{"cloister.echo/v1": {Handle: h, MaxResponse: MaxCallBytes + 1}}}, "limits beyond"},
		"not deterministic": {Config{Deterministic: true, HostCalls: map[string]HostCall{"cloister.echo/v1": {Handle: h}}}, "not deterministic"},
	} {
		tc.cfg.Module = wasmEmpty
		if _, err := r.Run(context.Background(), &tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, tc.want)
		}
	}
}
