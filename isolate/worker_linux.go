package isolate

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// workerExitSetup is the worker's exit status when it cannot even talk to
// its parent.
const workerExitSetup = 3

// Address-space bound of the worker beyond the guest's memory ceiling: the
// Go runtime's reservations, wazero's compiled code and its call stack
// (which wazero grows by doubling up to 400 MB). Measured peaks (VmPeak
// minus the ceiling's mapping): 1.55 GiB for an empty module, 1.6 GiB for a
// Go guest, 1.85 GiB for a stack overflow; 4 GiB leaves a factor of two.
const workerAddressSpaceOverhead = 4 << 30

// Fixed rlimits of the worker: descriptors for its pipes and the job's
// (maxJobFiles), and little else.
const (
	workerNoFile = 64 + maxJobFiles
	workerNProc  = 1024
)

// cacheMount is where the compilation cache appears inside the worker's
// empty root until the module is compiled.
const cacheMount = "/cache"

// WorkerMain is the jailed worker's main function; it returns the process
// exit status. It is only meaningful when IsWorker reports true: it jails
// itself, serves exactly one job received on stdin, writes the result to
// stdout and returns.
func WorkerMain() int {
	if os.Getenv(workerEnv) == workerProbe {
		fmt.Println(workerProtocol())
		return 0
	}
	in, out := os.Stdin, os.Stdout
	nss := map[string]bool{}
	for _, n := range strings.Split(os.Getenv(workerNSEnv), ",") {
		if n != "" {
			nss[n] = true
		}
	}
	cacheDir := os.Getenv(workerCacheEnv)
	engine := os.Getenv(workerEngineEnv)
	if engine == "" {
		engine = DefaultEngine
	}
	ready := readyMsg{Protocol: workerProtocol(), Engine: engine, Missing: map[string]string{}}
	if fd := os.Getenv(workerNetnsEnv); fd != "" {
		// The node's shared empty network namespace, first of all: a
		// worker that cannot join it must not go on in the host's.
		if err := joinNetns(fd); err != nil {
			fmt.Fprintln(os.Stderr, "worker: joining the node's network namespace:", err)
			return workerExitSetup
		}
		ready.Applied = append(ready.Applied, "netns")
	}
	cacheMounted := false
	if nss["mountns"] {
		var err error
		cacheMounted, err = emptyRoot(cacheDir)
		if err != nil {
			ready.Missing["emptyroot"] = err.Error()
		} else {
			ready.Applied = append(ready.Applied, "emptyroot")
		}
	} else {
		ready.Missing["emptyroot"] = "no mount namespace: the worker sees the host file system (the guest still does not)"
	}
	capsLimited, dropNow := false, false
	if !nss["userns"] && os.Geteuid() == 0 {
		// Root without a user namespace (decision 0002): keep only what
		// the lock-down needs. If that fails, switch to the unprivileged id at once,
		// before touching the module, and compile without the cache
		// (root's, out of that id's reach).
		if err := limitSetupCaps(); err != nil {
			ready.Missing["setupcaps"] = err.Error() + "; the worker drops its privileges before reading the module (see nocaps), and compiles without the compilation cache"
			dropNow = true
		} else {
			ready.Applied = append(ready.Applied, "setupcaps")
			capsLimited = true
		}
	}
	if err := setRlimits(map[int]uint64{unix.RLIMIT_NOFILE: workerNoFile, unix.RLIMIT_CORE: 0}); err != nil {
		ready.Missing["rlimit"] = err.Error()
	}
	lock := &lockState{engine: engine, cacheMounted: cacheMounted, capsLimited: capsLimited, groupsErr: dropGroups(),
		msg: lockedMsg{Missing: map[string]string{}}}
	if dropNow {
		lock.early()
		lock.cacheless = true
	}
	if err := writeFrame(out, &ready); err != nil {
		return workerExitSetup
	}

	// Everything that does not depend on the job is done while waiting for
	// it: opening the cache and making the runtime.
	ctx := context.Background()
	var cache string
	switch {
	case lock.cacheless:
	case cacheMounted:
		cache = cacheMount
	case cacheDir != "" && !nss["mountns"]:
		cache = cacheDir
	}
	exe, err := newEngineExecutor(engine, cache)
	if err != nil && cache != "" {
		exe, err = newEngineExecutor(engine, "")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return workerExitSetup
	}
	exe.prepare(ctx)

	var jb job
	for preloads := 0; ; {
		var msg workerInput
		files, err := recvFrame(in, math.MaxInt64, &msg)
		if err == nil {
			err = msg.setFiles(files)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "worker: reading the job:", err)
			return workerExitSetup
		}
		if msg.Job != nil {
			jb = *msg.Job
			break
		}
		if preloads++; preloads > 1 || msg.Preload == nil {
			fmt.Fprintln(os.Stderr, "worker: unexpected frame before the job")
			return workerExitSetup
		}
		// Before the lock-down, with the cache mounted: this runs no
		// guest code.
		exe.preload(ctx, msg.Preload, msg.PreloadDeterministic)
		// The job will run this module (the parent sends a job only to a
		// worker holding its module), so the cache is no longer needed:
		// the job-independent part of the lock-down is done now, off the
		// job's path.
		lock.early()
	}
	if jb.Sealed || len(jb.SealedInputs) > 0 {
		// The job's keys follow it; they are zeroed when the job is done
		// (the process exits then too).
		var sm secretMsg
		err := readFrame(in, 1<<20, &sm)
		if err == nil {
			jb.keys, err = sm.jobKeys(&jb)
		}
		for _, k := range sm.keys {
			clear(k) // the frame's buffer
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "worker: reading the job's keys:", err)
			return workerExitSetup
		}
		defer func() {
			for _, k := range jb.keys {
				clear(k[:])
			}
		}()
	}
	if lock.earlyDone && !lock.cacheless && !exe.holds(jb.ModuleSHA256) {
		// The cache is gone and the uid switched: another module could
		// not be compiled properly here. The parent never does this.
		fmt.Fprintln(os.Stderr, "worker: the job is for another module than the one preloaded")
		return workerExitSetup
	}
	var probes map[string]string
	if jb.SelfTest {
		probes = preLockProbes()
		lock.afterEarly = func() {
			// Before seccomp, which would hide it behind EPERM: the cache
			// is out of reach by file permissions alone.
			f, err := os.Open(cacheMount)
			if err == nil {
				f.Close()
			}
			probes["cache_after_uid_switch"] = probeErr(err)
		}
	}
	lockedDone := false
	var lockErr error
	lockdown := func() {
		lockedDone = true
		if jb.SelfTest {
			// After the id switch, before seccomp (which refuses getuid).
			lock.early()
			probes["ids"] = fmt.Sprintf("%d/%d", unix.Getuid(), unix.Getgid())
		}
		msg := lock.finish(&jb)
		if jb.SelfTest {
			for k, v := range postLockProbes(&jb) {
				probes[k] = v
			}
		}
		lockErr = writeFrame(out, &msg)
	}
	res, err := exe.execute(ctx, &jb, lockdown, &frameCalls{in: in, out: out, calls: jb.Calls})
	if !lockedDone {
		lockdown()
	}
	if lockErr != nil {
		return workerExitSetup
	}
	var wr wireResult
	if err != nil {
		wr.Err = err.Error()
	} else {
		wr = newWireResult(res)
	}
	wr.Probes = probes
	if err := writeFrame(out, &wr); err != nil {
		return workerExitSetup
	}
	return 0
}

// emptyRoot replaces the worker's view of the file system with an empty,
// read-only tmpfs. If cacheDir is set, it is bind-mounted at /cache until
// lockDown removes it. Returns whether the cache is mounted.
func emptyRoot(cacheDir string) (bool, error) {
	// Nothing done here may propagate back to the host's mount namespace.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return false, fmt.Errorf("making mounts private: %w", err)
	}
	// The cache directory may lie under the directory the new root is
	// mounted on; hold it by descriptor so that it can still be bound.
	cacheFD := -1
	if cacheDir != "" {
		if fd, err := unix.Open(cacheDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			defer unix.Close(fd)
			// Only a private cache is mounted: after the switch to the unprivileged id
			// its mode is what keeps the guest's worker out of it.
			var st unix.Stat_t
			if unix.Fstat(fd, &st) == nil && st.Uid == 0 && st.Mode&0o077 == 0 {
				cacheFD = fd
			}
		}
	}
	var root string
	for _, d := range []string{"/tmp", "/mnt", "/run", "/dev"} {
		if st, err := os.Stat(d); err == nil && st.IsDir() {
			root = d
			break
		}
	}
	if root == "" {
		return false, fmt.Errorf("no directory to mount the new root on")
	}
	if err := unix.Mount("cloister", root, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=64k,nr_inodes=16,mode=0755"); err != nil {
		return false, fmt.Errorf("mounting tmpfs: %w", err)
	}
	if err := os.Mkdir(root+"/old", 0o700); err != nil {
		return false, err
	}
	cached := false
	if cacheFD >= 0 {
		if err := os.Mkdir(root+cacheMount, 0o700); err != nil {
			return false, err
		}
		src := fmt.Sprintf("/proc/self/fd/%d", cacheFD)
		if err := unix.Mount(src, root+cacheMount, "", unix.MS_BIND, ""); err == nil {
			// Nothing in the cache is ever executed or a device; a cache
			// that cannot be mounted so is not used.
			if err := unix.Mount("", root+cacheMount, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
				unix.Unmount(root+cacheMount, unix.MNT_DETACH)
			} else {
				cached = true
			}
		}
	}
	if err := unix.PivotRoot(root, root+"/old"); err != nil {
		return false, fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return false, err
	}
	if err := unix.Unmount("/old", unix.MNT_DETACH); err != nil {
		return false, fmt.Errorf("detaching the old root: %w", err)
	}
	if err := os.Remove("/old"); err != nil {
		return false, err
	}
	// Nothing is written to the root from here on (the cache is a mount of
	// its own).
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		// The cache is mounted all the same: say so, so that the lock-down
		// takes it away.
		return cached, fmt.Errorf("making the root read-only: %w", err)
	}
	return cached, nil
}

// setRlimits lowers each limit to v (or keeps it where it is already
// lower): lowering needs no privilege, and the worker may have none left.
func setRlimits(limits map[int]uint64) error {
	var failed []string
	for res, v := range limits {
		var cur unix.Rlimit
		if unix.Getrlimit(res, &cur) == nil && cur.Max < v {
			v = cur.Max
		}
		if err := unix.Setrlimit(res, &unix.Rlimit{Cur: v, Max: v}); err != nil {
			failed = append(failed, fmt.Sprintf("rlimit %d: %v", res, err))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%s", strings.Join(failed, "; "))
	}
	return nil
}

// lockState carries the lock-down, which happens in two parts: early
// (the compilation cache is unmounted, the uid switched) and finish (the
// job's rlimits, no_new_privs, seccomp). Both run after the job's module is
// compiled and before it runs; a warm worker that preloaded the job's
// module does the early part while it waits.
type lockState struct {
	engine       string // sizes RLIMIT_AS (engineAddressSpace)
	cacheMounted bool
	// capsLimited: setupcaps is in force, so the worker cannot unmount the
	// cache; the uid switch puts it out of reach instead (the cache
	// directory is root's, mode 0700).
	capsLimited bool
	// cacheless: the early part ran before any module was read (setupcaps
	// failed), so modules are compiled without the cache.
	cacheless bool
	groupsErr error
	earlyDone bool
	msg       lockedMsg
	// afterEarly, if set, runs right after the uid switch (self-tests).
	afterEarly func()
}

// early unmounts the cache (where the worker may) and drops to the
// unprivileged uid (which also ends access to the root-owned cache).
func (l *lockState) early() {
	if l.earlyDone {
		return
	}
	l.earlyDone = true
	if l.cacheMounted && !l.capsLimited {
		if err := unix.Unmount(cacheMount, unix.MNT_DETACH); err != nil {
			l.msg.Missing["emptyroot"] = fmt.Sprintf("unmounting the compilation cache: %v", err)
		}
	}
	if err := dropPrivileges(l.groupsErr); err != nil {
		l.msg.Missing["nocaps"] = err.Error()
	} else {
		l.msg.Applied = append(l.msg.Applied, "nocaps")
	}
	if l.afterEarly != nil {
		l.afterEarly()
	}
}

// finish completes the lock-down for jb: the early part if not done yet,
// then the rlimits (lowering a limit needs no privilege), no_new_privs and
// the seccomp filter. It returns what was applied and what was not.
func (l *lockState) finish(jb *job) lockedMsg {
	l.early()
	msg := l.msg
	// CPU seconds: what compiling used so far, plus the run's wall-clock
	// limit (a guest cannot use more CPU than wall time on one thread; the
	// Go runtime's helper threads are covered by the extra second).
	var ru unix.Rusage
	used := 0.0
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) == nil {
		used = float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
	}
	cpu := uint64(math.Ceil(used+jb.Timeout.Seconds())) + 1
	// The only file the worker may write is the output area: no write
	// may take a file past its size (an attempt fails with EFBIG; the Go
	// runtime ignores SIGXFSZ).
	block, blocks, _ := areaLayout(jb.MaxOutput, jb.MaxOutputFiles)
	limits := map[int]uint64{
		unix.RLIMIT_CPU:   cpu,
		unix.RLIMIT_NPROC: workerNProc,
		unix.RLIMIT_FSIZE: uint64(block) * uint64(blocks),
	}
	if raceEnabled {
		msg.Missing["rlimit_as"] = "this is a race-detector build, whose shadow memory needs terabytes of address space"
	} else {
		limits[unix.RLIMIT_AS] = jb.Memory + workerAddressSpaceOverhead + engineAddressSpace[l.engine]
	}
	if err := setRlimits(limits); err != nil {
		msg.Missing["rlimit"] = err.Error()
	} else {
		msg.Applied = append(msg.Applied, "rlimit")
	}
	if err := installSeccomp(); err != nil {
		msg.Missing["seccomp"] = err.Error()
		// installSeccomp sets no_new_privs first; say whether that held.
		if v, _ := unix.PrctlRetInt(unix.PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0); v == 1 {
			msg.Applied = append(msg.Applied, "no_new_privs")
		} else {
			msg.Missing["no_new_privs"] = err.Error()
		}
	} else {
		msg.Applied = append(msg.Applied, "no_new_privs", "seccomp")
	}
	return msg
}

// unprivilegedID is the uid and gid the parent named (CLOISTER_ISOLATE_UID).
func unprivilegedID() (int, error) {
	v := os.Getenv(workerUIDEnv)
	if v == "" {
		return 0, fmt.Errorf("no unprivileged uid can be mapped into the worker's user namespace without privilege; the worker keeps its capabilities, which are confined to its own namespaces")
	}
	id, err := strconv.Atoi(v)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("bad %s %q", workerUIDEnv, v)
	}
	return id, nil
}

// dropGroups leaves every supplementary group and switches to the
// unprivileged gid. It is done before the job arrives (it changes neither
// the capabilities needed for the jail nor access to the root-owned cache,
// which is by uid), so that the job pays for one id switch, not three.
func dropGroups() error {
	id, err := unprivilegedID()
	if err != nil {
		return err
	}
	if groups, err := unix.Getgroups(); err == nil && len(groups) == 0 && allIDs(unix.Getresgid, id) {
		// The parent had it done before exec (SysProcAttr.Credential), on
		// the one thread there was; every thread since inherited it.
		return nil
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(id, id, id); err != nil {
		return fmt.Errorf("setresgid: %w", err)
	}
	return nil
}

// allIDs reports whether the real, effective and saved ids are all id.
func allIDs(getres func() (int, int, int), id int) bool {
	r, e, sv := getres()
	return r == id && e == id && sv == id
}

// dropPrivileges switches every thread to the unprivileged uid; leaving
// uid 0 clears the permitted and effective capability sets. Go applies
// set*id calls to all threads, with or without cgo. dropGroups must have
// succeeded first.
func dropPrivileges(groupsErr error) error {
	if groupsErr != nil {
		return groupsErr
	}
	id, err := unprivilegedID()
	if err != nil {
		return err
	}
	if err := syscall.Setresuid(id, id, id); err != nil {
		return fmt.Errorf("setresuid: %w", err)
	}
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("capget: %w", err)
	}
	if data[0].Effective|data[0].Permitted|data[1].Effective|data[1].Permitted != 0 {
		return fmt.Errorf("capabilities remain after leaving uid 0")
	}
	return nil
}

// setupCaps are the capabilities a root worker without a user namespace
// keeps between its mount set-up (which leaves the root read-only) and the
// lock-down: CAP_SETUID and CAP_SETGID, to switch to the unprivileged id. Reading and
// writing the root-owned cache needs none (uid 0 owns it), and the cache
// is not unmounted but put out of reach by the uid switch.
var setupCaps = []uintptr{unix.CAP_SETUID, unix.CAP_SETGID}

// limitSetupCaps sets the permitted and effective capability sets to
// setupCaps (inheritable empty, which empties the ambient set too) on
// every thread, and locks the
// securebits so that uid 0 regains nothing through exec (SECBIT_NOROOT).
// Capabilities are per thread and Go gives no control over which thread
// runs what, so this needs syscall.AllThreadsSyscall, which exists only
// without cgo. (The bounding set is left alone: with NOROOT and, later,
// no_new_privs it never grants anything, and emptying it costs one
// all-threads call per capability.)
func limitSetupCaps() error {
	var mask uint64
	for _, c := range setupCaps {
		mask |= 1 << c
	}
	const secbits = 1<<0 | 1<<1 // SECBIT_NOROOT | SECBIT_NOROOT_LOCKED (linux/securebits.h)
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_SET_SECUREBITS, secbits, 0); e != 0 {
		if e == syscall.ENOTSUP {
			return fmt.Errorf("this worker binary links cgo, so capabilities cannot be set on all of its threads")
		}
		return fmt.Errorf("setting securebits: %w", e)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := [2]unix.CapUserData{
		{Effective: uint32(mask), Permitted: uint32(mask)},
		{Effective: uint32(mask >> 32), Permitted: uint32(mask >> 32)},
	}
	if _, _, e := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(&hdr)), uintptr(unsafe.Pointer(&data[0])), 0); e != 0 {
		return fmt.Errorf("capset: %w", e)
	}
	return nil
}

// netnsCookie identifies this thread's network namespace without /proc and
// without privilege: SO_NETNS_COOKIE of a new socket (Linux 5.14).
func netnsCookie() (uint64, error) {
	s, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(s)
	const soNetnsCookie = 71 // asm-generic/socket.h
	return unix.GetsockoptUint64(s, unix.SOL_SOCKET, soNetnsCookie)
}

// effectiveCaps reads this thread's effective capability set.
func effectiveCaps() (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, err
	}
	return uint64(data[1].Effective)<<32 | uint64(data[0].Effective), nil
}

func probeErr(err error) string {
	if err == nil {
		return "allowed"
	}
	return err.Error()
}

// preLockProbes records what the jail looks like before the seccomp filter
// (which would hide it behind EPERM): network interfaces and the root.
func preLockProbes() map[string]string {
	p := map[string]string{}
	ifs, err := net.Interfaces()
	if err != nil {
		p["interfaces"] = "error: " + err.Error()
	} else {
		var names []string
		for _, i := range ifs {
			state := "down"
			if i.Flags&net.FlagUp != 0 {
				state = "up"
			}
			names = append(names, i.Name+":"+state)
		}
		p["interfaces"] = strings.Join(names, ",")
	}
	if c, err := netnsCookie(); err != nil {
		p["netns_cookie"] = "error: " + err.Error()
	} else {
		p["netns_cookie"] = strconv.FormatUint(c, 10)
	}
	if caps, err := effectiveCaps(); err != nil {
		p["caps"] = "error: " + err.Error()
	} else {
		p["caps"] = fmt.Sprintf("%#x", caps)
	}
	ents, err := os.ReadDir("/")
	if err != nil {
		p["root"] = "error: " + err.Error()
	} else {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		p["root"] = strings.Join(names, ",")
	}
	return p
}

// postLockProbes tries forbidden operations after lockDown; each must fail.
func postLockProbes(jb *job) map[string]string {
	p := map[string]string{}
	// The output area cannot grow past its size (RLIMIT_FSIZE), and an
	// input cannot be written.
	if jb.area != nil {
		block, blocks, _ := areaLayout(jb.MaxOutput, jb.MaxOutputFiles)
		_, err := unix.Pwrite(int(jb.area.Fd()), []byte{1}, block*int64(blocks))
		p["area_past_size"] = probeErr(err)
	}
	for i, in := range jb.inputs {
		_, err := unix.Pwrite(int(in.Fd()), []byte{1}, 0)
		p["write_input_"+jb.InputNames[i]] = probeErr(err)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.Close(fd)
	}
	p["socket"] = probeErr(err)
	fd, err = unix.Open("/etc/passwd", unix.O_RDONLY, 0)
	if err == nil {
		unix.Close(fd)
	}
	p["open"] = probeErr(err)
	_, _, errno := unix.RawSyscall(unix.SYS_PTRACE, unix.PTRACE_TRACEME, 0, 0)
	p["ptrace"] = probeErr(errnoErr(errno))
	p["mount"] = probeErr(unix.Mount("none", "/", "tmpfs", 0, ""))
	p["execve"] = probeErr(unix.Exec("/bin/sh", []string{"sh"}, nil))
	p["unshare"] = probeErr(unix.Unshare(unix.CLONE_NEWUSER))
	pid, _, errno := unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	if errno == 0 && pid == 0 {
		unix.RawSyscall(unix.SYS_EXIT_GROUP, 0, 0, 0)
	}
	p["fork"] = probeErr(errnoErr(errno))
	return p
}

func errnoErr(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// frameCalls carries the guest's host calls to the parent as frames on the
// worker's stdout and reads each answer from its stdin, one call at a
// time. A broken channel ends the worker: the parent is gone or broke the
// protocol, and the guest must not go on as if a call had been answered.
type frameCalls struct {
	in, out *os.File
	calls   []jobCall
	seq     uint64
}

func (t *frameCalls) roundTrip(name string, req []byte) (uint32, []byte) {
	c, _ := findCall(t.calls, name)
	t.seq++
	if err := writeFrame(t.out, &callMsg{Seq: t.seq, Name: name, req: req}); err != nil {
		t.fail(err)
	}
	var reply replyMsg
	if err := readFrame(t.in, maxReplyFrame(c), &reply); err != nil {
		t.fail(err)
	}
	if reply.Seq != t.seq {
		t.fail(fmt.Errorf("the answer to call %d came for call %d", t.seq, reply.Seq))
	}
	return reply.Status, reply.resp
}

func (t *frameCalls) fail(err error) {
	fmt.Fprintln(os.Stderr, "worker: host call:", err)
	os.Exit(workerExitSetup)
}
