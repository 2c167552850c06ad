package isolate

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// sharedNetns is one empty network namespace (a loopback that is down,
// nothing else) that a root node's workers join, instead of the kernel
// making one per run and tearing it down afterwards — the costliest of the
// worker's namespaces (~0.8 ms of CPU per run, part of it in kernel
// threads). Workers sharing it could reach each other only through
// sockets (abstract Unix sockets are per network namespace), and the
// seccomp filter refuses socket(); so the shared namespace is used only
// once a worker has shown that seccomp is in force here, and never again
// after one ran without it. See decision 0002.
type sharedNetns struct {
	f *os.File
	// seccomp: 0 not known yet, 1 every worker so far had it, 2 one did
	// not (workers get their own namespace from then on).
	seccomp atomic.Int32
}

// newSharedNetns makes the namespace on a thread locked for the purpose,
// which then returns to the node's own namespace; if it cannot, the thread
// stays locked and leaves with its goroutine (Go ends such a thread — or,
// were it the main thread, parks it for good), so no other code ever runs
// in the empty namespace. It returns nil if the namespace cannot be made:
// workers then get their own.
func newSharedNetns() *sharedNetns {
	type made struct {
		f   *os.File
		err error
	}
	ch := make(chan made, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			ch <- made{err: err}
			return
		}
		defer orig.Close()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread() // nothing changed
			ch <- made{err: err}
			return
		}
		f, err := os.Open("/proc/thread-self/ns/net")
		if back := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); back != nil {
			if f != nil {
				f.Close()
			}
			ch <- made{err: fmt.Errorf("returning to the node's network namespace: %w", back)}
			return // still locked: the thread goes with the goroutine
		}
		runtime.UnlockOSThread()
		ch <- made{f, err}
	}()
	m := <-ch
	if m.err != nil {
		return nil
	}
	return &sharedNetns{f: m.f}
}

// file returns the namespace to give a new worker, or nil when the worker
// must get its own.
func (n *sharedNetns) file() *os.File {
	if n == nil || n.seccomp.Load() != 1 {
		return nil
	}
	return n.f
}

// observe learns from a worker's lock-down message whether seccomp is in
// force on this machine.
func (n *sharedNetns) observe(locked *lockedMsg) {
	if n == nil {
		return
	}
	if _, missing := locked.Missing["seccomp"]; missing {
		n.seccomp.Store(2)
		return
	}
	for _, p := range locked.Applied {
		if p == "seccomp" {
			n.seccomp.CompareAndSwap(0, 1)
			return
		}
	}
}

func (n *sharedNetns) close() {
	if n != nil {
		n.f.Close()
	}
}

// joinNetns moves every thread of the worker into the network namespace
// open on descriptor fd (CLOISTER_ISOLATE_NETNS) and closes it. The
// namespace is per thread, so this needs syscall.AllThreadsSyscall, which
// exists only without cgo; the parent asks only such workers.
func joinNetns(fd string) error {
	n, err := strconv.Atoi(fd)
	if err != nil || n < 3 {
		return fmt.Errorf("bad %s %q", workerNetnsEnv, fd)
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_SETNS, uintptr(n), unix.CLONE_NEWNET, 0); e != 0 {
		return fmt.Errorf("setns: %w", e)
	}
	return unix.Close(n)
}
