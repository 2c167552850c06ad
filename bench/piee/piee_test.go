// Package pieebench measures what proof of isolated execution costs a
// node: the CPU time of one challenge operator run in a warm, jailed,
// deterministic isolate (the compiled program cached, as a node's agent
// keeps it), side by side with the same operator compiled natively.
//
//	go test -run '^$' -bench . -benchtime 5x ./bench/piee
//
// A node in an epoch runs its own challenge and k = 3 verifications:
// cpu-ms/op × 4 × epochs per hour is its hourly cost (docs/piee.md).
package pieebench

import (
	"context"
	"encoding/hex"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/piee"
	"github.com/cloisterhq/cloister/piee/operators/ops"
)

func TestMain(m *testing.M) {
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	os.Exit(m.Run())
}

// cpu is this process's and its waited-for children's CPU time: the
// jailed workers are children.
func cpu() time.Duration {
	var self, kids syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	syscall.Getrusage(syscall.RUSAGE_CHILDREN, &kids)
	tv := func(t syscall.Timeval) time.Duration {
		return time.Duration(t.Sec)*time.Second + time.Duration(t.Usec)*time.Microsecond
	}
	return tv(self.Utime) + tv(self.Stime) + tv(kids.Utime) + tv(kids.Stime)
}

func BenchmarkChallenge(b *testing.B) {
	ctx := context.Background()
	rt, err := isolate.New(ctx, isolate.Options{DataDir: b.TempDir(), WarmWorkers: 1, WorkerBinary: isolate.WorkerBinarySelf})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	seed := strings.Repeat("a5", 32)
	for _, op := range piee.Builtin() {
		b.Run(op.Name+"/isolate", func(b *testing.B) {
			if _, err := piee.Execute(ctx, rt, op, seed, "software"); err != nil { // compile and cache
				b.Fatal(err)
			}
			b.ResetTimer()
			c0 := cpu()
			for range b.N {
				if _, err := piee.Execute(ctx, rt, op, seed, "software"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpu()-c0).Milliseconds())/float64(b.N), "cpu-ms/op")
		})
		if op.Class != "arith" {
			continue
		}
		b.Run(op.Name+"/native", func(b *testing.B) {
			n, _ := strconv.Atoi(op.Args[1])
			sb, _ := hex.DecodeString(seed)
			c0 := cpu()
			for range b.N {
				if _, err := ops.Compute(op.Name, n, sb); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64((cpu()-c0).Microseconds())/1000/float64(b.N), "cpu-ms/op")
		})
	}
}
