package isolate

import (
	"os"

	"golang.org/x/sys/unix"
)

// awaitExit returns once the child pid has exited (it is then reaped at
// once by Wait). It waits in the runtime's network poller, where a pidfd
// becomes readable at exit, instead of in a blocking waitid: every worker
// would otherwise hold an OS thread in the kernel for its whole life —
// warm ones included — and cost the scheduler a hand-off of its processor
// when it starts waiting.
//
// The pidfd is opened here, after the start, as a file description of its
// own (non-blocking): the one the os package keeps for Wait must stay
// blocking, or its waitid would return EAGAIN before the exit. The pid
// cannot be reused meanwhile: only this process reaps its children. Where
// pidfds are missing (kernels before 5.3) or cannot be polled, it returns
// at once and Wait blocks as before.
func awaitExit(pid int) {
	f, err := openPidfd(pid)
	if err != nil {
		return
	}
	defer f.Close()
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	// Read calls the function, and waits for readiness each time it
	// returns false; a pidfd the poller would not take makes Read fail.
	// Either way Wait follows, and blocks if the child still runs.
	_ = rc.Read(func(fd uintptr) bool {
		p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(p, 0)
		return err != nil && err != unix.EINTR || n > 0
	})
}

// openPidfd opens a non-blocking pidfd of pid, a file description of its
// own.
func openPidfd(pid int) (*os.File, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err == unix.EINVAL { // before 5.10: no PIDFD_NONBLOCK
		if fd, err = unix.PidfdOpen(pid, 0); err == nil {
			if err = unix.SetNonblock(fd, true); err != nil { // this description only
				unix.Close(fd)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), "pidfd"), nil
}
