package isolate

import (
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestAwaitExit: awaitExit returns only once the child has exited, and the
// Wait after it reaps the child. Opening the pidfd must not make the os
// package's own one non-blocking: Wait on a child that still runs blocks
// until the exit instead of failing with EAGAIN.
func TestAwaitExit(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep(1)")
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(sleep, "0.3")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}

	cmd := start()
	t0 := time.Now()
	awaitExit(cmd.Process.Pid)
	if d := time.Since(t0); d < 200*time.Millisecond {
		t.Fatalf("awaitExit returned after %v, before the child could exit", d)
	}
	if err := cmd.Wait(); err != nil || !cmd.ProcessState.Exited() {
		t.Fatalf("Wait after awaitExit: %v, %v", err, cmd.ProcessState)
	}

	cmd = start()
	f, err := openPidfd(cmd.Process.Pid)
	if err != nil {
		t.Skipf("no pidfd here: %v", err)
	}
	defer f.Close()
	if err := cmd.Wait(); err != nil || cmd.ProcessState == nil || !cmd.ProcessState.Exited() {
		t.Fatalf("Wait with a non-blocking pidfd open beside it: %v, %v", err, cmd.ProcessState)
	}

	// A child that exited before the wait began (waitid with WNOWAIT
	// waits for the exit without reaping it).
	cmd = start()
	var info unix.Siginfo
	if err := unix.Waitid(unix.P_PID, cmd.Process.Pid, &info, unix.WEXITED|unix.WNOWAIT, nil); err != nil {
		t.Fatal(err)
	}
	// It returns: a wait for readiness it missed would never end.
	returnsWithin(t, time.Minute, "awaitExit on an exited child", func() { awaitExit(cmd.Process.Pid) })
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}
