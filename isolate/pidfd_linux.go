package isolate

import (
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit returns once the process behind pidfd has exited (it is then
// reaped at once by Wait), and closes pidfd. It waits in the runtime's
// network poller, where a pidfd becomes readable at exit, instead of in a
// blocking waitid: every worker would otherwise hold an OS thread in the
// kernel for its whole life — warm ones included — and cost the scheduler
// a hand-off of its processor when it starts waiting. Without a pidfd
// (pidfd < 0: a kernel before 5.3, or one that refused it) it returns at
// once, and Wait blocks as before.
func awaitExit(pidfd int) {
	if pidfd < 0 {
		return
	}
	if err := unix.SetNonblock(pidfd, true); err != nil {
		unix.Close(pidfd)
		return
	}
	f := os.NewFile(uintptr(pidfd), "pidfd")
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	// Read calls the function, and waits for readiness each time it
	// returns false; a pidfd the poller would not take makes Read fail,
	// and Wait then blocks as before.
	_ = rc.Read(func(fd uintptr) bool {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		return err != nil && err != unix.EINTR || n > 0
	})
}
