package isolate

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The worker's seccomp filter is an allow-list: the system calls the Go
// runtime and wazero make while a guest runs. Everything else fails with
// EPERM (an error the Go runtime tolerates, unlike a kill, so a missed
// harmless call shows up as a failed operation rather than a dead worker).
// Filesystem (open, stat by path), network (socket), process creation
// (fork, execve, clone without CLONE_THREAD), debugging (ptrace,
// process_vm_*), mount, and kernel-key/BPF/perf calls are all absent.
//
// A foreign system-call ABI (x32 on amd64, or any other audit arch) kills the
// process: a filter keyed on numbers is only meaningful for one ABI.

const (
	seccompSetModeFilter  = 1          // SECCOMP_SET_MODE_FILTER
	seccompRetKillProcess = 0x80000000 // SECCOMP_RET_KILL_PROCESS
	seccompDataNr         = 0          // offsetof(struct seccomp_data, nr)
	seccompDataArch       = 4          // offsetof(struct seccomp_data, arch)
	seccompDataArg0Lo     = 16         // low 32 bits of args[0] (little endian)
	bpfLdW                = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfJeq                = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfJge                = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
	bpfJset               = unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K
	bpfRet                = unix.BPF_RET | unix.BPF_K
	seccompRetErrnoEPERM  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
	seccompRetErrnoENOSYS = unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)
)

// workerSyscalls are allowed unconditionally (plus the arch-specific ones in
// seccomp_<arch>.go).
var workerSyscalls = []uintptr{
	// memory: the Go heap, wazero's compiled code (mprotect to exec), guest memory
	unix.SYS_MMAP, unix.SYS_MUNMAP, unix.SYS_MPROTECT, unix.SYS_MADVISE,
	// threads and scheduling
	unix.SYS_FUTEX, unix.SYS_SCHED_YIELD, unix.SYS_NANOSLEEP, unix.SYS_CLOCK_NANOSLEEP,
	unix.SYS_CLOCK_GETTIME, unix.SYS_GETTID, unix.SYS_GETPID, unix.SYS_SCHED_GETAFFINITY,
	unix.SYS_EXIT, unix.SYS_EXIT_GROUP, unix.SYS_RESTART_SYSCALL,
	// signals (the Go runtime preempts goroutines with SIGURG via tgkill)
	unix.SYS_RT_SIGACTION, unix.SYS_RT_SIGPROCMASK, unix.SYS_RT_SIGRETURN,
	unix.SYS_SIGALTSTACK, unix.SYS_TGKILL, unix.SYS_TKILL,
	// the pipes to the parent, already open; the netpoller
	unix.SYS_READ, unix.SYS_WRITE, unix.SYS_CLOSE, unix.SYS_FCNTL, unix.SYS_FSTAT,
	// the job's descriptors, already open: inputs (read-only or sealed)
	// read at an offset, the output area (RLIMIT_FSIZE) read and written
	// at an offset and its freed blocks punched out
	unix.SYS_PREAD64, unix.SYS_PWRITE64, unix.SYS_FALLOCATE,
	unix.SYS_EPOLL_CREATE1, unix.SYS_EPOLL_CTL, unix.SYS_EPOLL_PWAIT, unix.SYS_EVENTFD2,
	unix.SYS_PIPE2,
	// randomness for non-deterministic guests (crypto/rand)
	unix.SYS_GETRANDOM,
	// threads made by glibc's pthread_create in cgo-enabled builds: glibc
	// registers each new thread for restartable sequences and robust
	// futexes, and aborts the process if that fails; it reports fatal
	// errors with writev.
	unix.SYS_RSEQ, unix.SYS_SET_ROBUST_LIST, unix.SYS_WRITEV,
	// glibc's malloc in cgo workers (the wasmtime engine's allocations)
	// grows its heap with brk; refusing it would not make malloc fall
	// back to mmap: glibc takes the -1 of a filtered brk for a new break
	// and the next allocation faults. Memory stays bounded by RLIMIT_AS
	// and the cgroup.
	unix.SYS_BRK,
}

// buildSeccompFilter assembles the BPF program.
func buildSeccompFilter() []unix.SockFilter {
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jump := func(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: code, K: k, Jt: jt, Jf: jf}
	}
	prog := []unix.SockFilter{
		stmt(bpfLdW, seccompDataArch),
		jump(bpfJeq, auditArch, 1, 0),
		stmt(bpfRet, seccompRetKillProcess),
		stmt(bpfLdW, seccompDataNr),
	}
	if foreignSyscallBit != 0 {
		prog = append(prog,
			jump(bpfJge, foreignSyscallBit, 0, 1),
			stmt(bpfRet, seccompRetKillProcess))
	}
	for _, nr := range append(append([]uintptr{}, workerSyscalls...), archSyscalls...) {
		prog = append(prog,
			jump(bpfJeq, uint32(nr), 0, 1),
			stmt(bpfRet, unix.SECCOMP_RET_ALLOW))
	}
	// clone: threads only (the Go runtime always passes CLONE_THREAD);
	// fork-like clones are refused. clone3 reports ENOSYS so that any
	// caller falls back to clone, whose flags this filter can inspect.
	prog = append(prog,
		jump(bpfJeq, uint32(unix.SYS_CLONE3), 0, 1),
		stmt(bpfRet, seccompRetErrnoENOSYS),
		jump(bpfJeq, uint32(unix.SYS_CLONE), 0, 4),
		stmt(bpfLdW, seccompDataArg0Lo),
		jump(bpfJset, unix.CLONE_THREAD, 0, 1),
		stmt(bpfRet, unix.SECCOMP_RET_ALLOW),
		stmt(bpfRet, seccompRetErrnoEPERM),
		stmt(bpfRet, seccompRetErrnoEPERM),
	)
	return prog
}

// installSeccomp sets no_new_privs and installs the filter on every thread of
// the process (SECCOMP_FILTER_FLAG_TSYNC: the Go runtime already has several
// threads, and prctl(PR_SET_SECCOMP) would cover only the calling one).
func installSeccomp() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_NO_NEW_PRIVS: %w", err)
	}
	filter := buildSeccompFilter()
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, seccompSetModeFilter, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&prog)))
	if errno != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER, TSYNC): %w", errno)
	}
	if r != 0 {
		return fmt.Errorf("seccomp(SET_MODE_FILTER, TSYNC): thread %d could not be synchronised", r)
	}
	return nil
}
