package isolate

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A worker that a guest took over could send anything on its pipe. These
// tests start the test binary as a worker that follows the protocol up to
// the lock-down and then breaks it (rogueWorker, chosen by rogueEnv), and
// check that the parent refuses each frame before it allocates for it or
// runs a handler for it, and that the run ends.

const rogueEnv = "CLOISTER_ISOLATE_ROGUE"

// rogueWorker plays a compromised worker: ready, job, locked, then mode.
func rogueWorker(mode string) int {
	in, out := os.Stdin, os.Stdout
	ready := readyMsg{Protocol: workerProtocol(), Engine: os.Getenv(workerEngineEnv)}
	if os.Getenv(workerNetnsEnv) != "" {
		ready.Applied = append(ready.Applied, "netns")
	}
	if err := writeFrame(out, &ready); err != nil {
		return 3
	}
	var msg workerInput
	for msg.Job == nil {
		files, err := recvFrame(in, math.MaxInt64, &msg)
		if err != nil {
			return 3
		}
		if err := msg.setFiles(files); err != nil {
			return 3
		}
	}
	call := func(seq uint64, name string, req []byte) {
		writeFrame(out, &callMsg{Seq: seq, Name: name, req: req})
	}
	reply := func() {
		var r replyMsg
		readFrame(in, 1<<30, &r)
	}
	result := func() {
		wr := newWireResult(&Result{Report: Report{Outcome: OutcomeExited}})
		writeFrame(out, &wr)
	}
	if mode == "call-before-locked" {
		call(1, "cloister.test.echo/v1", []byte("early"))
		time.Sleep(time.Minute)
		return 0
	}
	writeFrame(out, &lockedMsg{})
	switch mode {
	case "oversized-call":
		// A frame claiming a terabyte, with a call's kind.
		var b [13]byte
		binary.BigEndian.PutUint64(b[:], 1<<40)
		binary.BigEndian.PutUint32(b[8:], 1)
		b[12] = kindCall
		out.Write(b[:])
	case "oversized-request":
		call(1, "cloister.test.echo/v1", make([]byte, 300_001))
	case "out-of-order":
		call(5, "cloister.test.echo/v1", []byte("x"))
	case "not-allowed":
		call(1, "cloister.test.secret/v1", []byte("x"))
	case "unknown-kind":
		writeFrame(out, &readyMsg{})
	case "call-after-result":
		call(1, "cloister.test.echo/v1", []byte("x"))
		reply()
		result()
		for i := uint64(2); i < 100; i++ {
			call(i, "cloister.test.echo/v1", []byte("late"))
		}
		return 0
	case "flood-no-read":
		// Calls without ever reading an answer.
		for i := uint64(1); i < 100_000; i++ {
			call(i, "cloister.test.echo/v1", make([]byte, 1024))
		}
	}
	time.Sleep(time.Minute)
	return 0
}

// TestRogueWorkerFrames: each way a compromised worker breaks the
// host-call protocol is refused — the run fails naming the violation, or
// (a call after the result) is ignored — without a handler running for
// it, and within a bound.
func TestRogueWorkerFrames(t *testing.T) {
	for _, tc := range []struct {
		mode    string
		want    string // in Run's error; "" for a result
		answers int64
	}{
		{"oversized-call", "exceeds its", 0},
		{"oversized-request", "whose limit is 300000", 0},
		{"out-of-order", "host call 5 where 1 was due", 0},
		{"not-allowed", "which the job may not make", 0},
		{"unknown-kind", "where none is expected", 0},
		{"call-after-result", "", 1},
		{"call-before-locked", "", 0},
		{"flood-no-read", "", -1},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			r := newRuntime(t, Options{WorkerBinary: WorkerBinarySelf})
			r.jail.testEnv = []string{rogueEnv + "=" + tc.mode}
			r.jail.writeTimeout = 500 * time.Millisecond
			var handled, blocked atomic.Int64
			calls := testCalls(&blocked)
			echo := calls["cloister.test.echo/v1"]
			inner := echo.Handle
			echo.Handle = func(ctx context.Context, req []byte) ([]byte, error) {
				handled.Add(1)
				return inner(ctx, req)
			}
			calls["cloister.test.echo/v1"] = echo
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			start := time.Now()
			res, err := r.Run(ctx, &Config{Module: wasmEmpty, HostCalls: calls, Timeout: 5 * time.Second})
			took := time.Since(start)
			if ctx.Err() != nil {
				t.Fatalf("Run did not return: %v", err)
			}
			switch {
			case tc.mode == "call-before-locked":
				// The lock-down message is refused: no result.
				if err == nil && res.Report.Outcome == OutcomeExited {
					t.Errorf("a call before the lock-down gave a result: %+v", res.Report)
				}
			case tc.mode == "flood-no-read":
				// Answers are written until the worker's socket is
				// full; then the write times out, the worker is killed.
				if err == nil && res.Report.Outcome == OutcomeExited {
					t.Errorf("a worker that never reads its answers gave a result: %+v", res.Report)
				}
				if handled.Load() > 10_000 {
					t.Errorf("%d calls answered for a worker that read none", handled.Load())
				}
				t.Logf("flood: %d calls answered before the worker was killed (%v)", handled.Load(), took)
			case tc.want == "":
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				wantOutcome(t, res, OutcomeExited, 0)
			default:
				if err == nil || !strings.Contains(err.Error(), "broke the protocol") || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("Run: %v, %v; want the protocol violation named (%q)", err, res, tc.want)
				}
			}
			if tc.answers >= 0 && handled.Load() != tc.answers {
				t.Errorf("%d calls answered, want %d", handled.Load(), tc.answers)
			}
		})
	}
}
