package isolatebench

import (
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/isolate"
)

// childrenCPU is the user+system CPU time of every reaped child so far.
func childrenCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkWorkerStart puts the CPU time of one jailed worker run of the
// trivial module (a cold lean worker: namespaces, cgroup, lock-down,
// module from the compilation cache, one job, exit) beside the floor the
// issue measures it against, fork+exec of /bin/true, in the same run:
// b.N of each, each block's children's rusage divided by b.N.
// cpu-worker-ms/op over cpu-true-ms/op is the ratio (reported as
// x-floor); cpu-parent-ms/op is what the runtime's side of the jailed
// runs cost this process (starting, serving and reaping the worker,
// and the kernel's namespace set-up, which clone charges to the parent);
// cpu-bare-ms/op is the lean worker binary started only to print its
// protocol and exit (the Go runtime and package initialisation, no jail,
// no job).
func BenchmarkWorkerStart(b *testing.B) {
	opts := isolate.Options{WorkerBinary: leanWorker, DataDir: b.TempDir()}
	cfg := &isolate.Config{Module: emptyStart, Timeout: 10 * time.Second}
	run := func(rt *isolate.Runtime) {
		res, err := rt.Run(context.Background(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		if res.Report.Outcome != isolate.OutcomeExited || res.Report.ExitCode != 0 {
			b.Fatalf("outcome %s/%d: %s", res.Report.Outcome, res.Report.ExitCode, res.Report.Error)
		}
		res.Close()
	}
	// The compilation cache is filled, and its worker reaped, before the
	// measurement.
	warm, err := isolate.New(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	run(warm)
	warm.Close()
	rt, err := isolate.New(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	self0 := selfCPU(b)
	kids0 := childrenCPU(b)
	for i := 0; i < b.N; i++ {
		run(rt)
	}
	rt.Close() // waits for every worker, so all are in the children's rusage
	kids1 := childrenCPU(b)
	self1 := selfCPU(b)
	for i := 0; i < b.N; i++ {
		if err := exec.Command("/bin/true").Run(); err != nil {
			b.Fatal(err)
		}
	}
	kids2 := childrenCPU(b)
	for i := 0; i < b.N; i++ {
		cmd := exec.Command(leanWorker)
		cmd.Env = []string{"CLOISTER_ISOLATE_WORKER=protocol"}
		if err := cmd.Run(); err != nil {
			b.Fatal(err)
		}
	}
	kids3 := childrenCPU(b)
	b.StopTimer()
	worker := float64((kids1 - kids0).Microseconds()) / 1000 / float64(b.N)
	floor := float64((kids2 - kids1).Microseconds()) / 1000 / float64(b.N)
	b.ReportMetric(worker, "cpu-worker-ms/op")
	b.ReportMetric(floor, "cpu-true-ms/op")
	b.ReportMetric(float64((kids3-kids2).Microseconds())/1000/float64(b.N), "cpu-bare-ms/op")
	b.ReportMetric(float64((self1-self0).Microseconds())/1000/float64(b.N), "cpu-parent-ms/op")
	if floor > 0 {
		b.ReportMetric(worker/floor, "x-floor")
	}
}

// selfCPU is this process's user+system CPU time so far.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
