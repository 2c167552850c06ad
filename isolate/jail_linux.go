package isolate

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Environment of a worker. Nothing else from the parent's environment is
// passed on.
const (
	workerEnv      = "CLOISTER_ISOLATE_WORKER" // marker: "1"
	workerNSEnv    = "CLOISTER_ISOLATE_NS"     // namespaces the parent created, comma-separated
	workerCacheEnv = "CLOISTER_ISOLATE_CACHE"  // host path of the compilation cache, bind-mounted at /cache
	workerUIDEnv   = "CLOISTER_ISOLATE_UID"    // unprivileged uid/gid the worker switches to before the guest runs
	workerNetnsEnv = "CLOISTER_ISOLATE_NETNS"  // descriptor of the node's shared empty network namespace to join
)

// netnsFD is the descriptor a worker finds the shared network namespace on
// (the first of cmd.ExtraFiles).
const netnsFD = 3

// namespaces, in the order the report lists them, with their clone flags.
var namespaces = []struct {
	name string
	flag uintptr
}{
	{"userns", unix.CLONE_NEWUSER},
	{"netns", unix.CLONE_NEWNET},
	{"mountns", unix.CLONE_NEWNS},
	{"pidns", unix.CLONE_NEWPID},
	{"ipcns", unix.CLONE_NEWIPC},
	{"utsns", unix.CLONE_NEWUTS},
}

// jailer starts jailed workers and drives them through one job each.
type jailer struct {
	cache *entryCache // nil: workers compile without a cache
	bin   *workerBinary
	// engine is the engine the workers must run (they say so when ready).
	engine string
	// netns is the node's shared empty network namespace (nil: each
	// worker gets a new one); see sharedNetns.
	netns  *sharedNetns
	ids    *workerIDs     // a root node's workers' own uids (nil: not root)
	cg     *cgroupManager // nil when cgroup v2 cannot be used
	cgMiss string         // why not

	mu      sync.Mutex
	nsFlags uintptr           // namespaces that worked last time
	nsMiss  map[string]string // namespaces given up, and why
	warm    int
	closed  bool
	wg      sync.WaitGroup // pool refills
	// The warm pool: see pool_linux.go.
	pool    []*worker   // idle workers, ready or starting
	blanks  int         // pooled or starting workers that hold no module
	hint    *moduleHint // the module the last job ran
	lastSum [32]byte    // that module's hash, once a job ran
	hasLast bool
	// live holds every started worker until it is reaped and released,
	// so that Close can kill them all (idle, starting, or running a job)
	// and know when they are gone; emptied is closed when live empties
	// after Close.
	live     map[*worker]struct{}
	starting int // spawns under way, not yet in live
	emptied  chan struct{}

	exitWait     time.Duration // workerExitWait, shorter in tests
	writeTimeout time.Duration // jobWriteTimeout, shorter in tests
	testEnv      []string      // added to workers' environment (tests: a worker playing a compromised one)
}

// closeWait bounds how long Close waits for killed workers to be reaped.
// It takes milliseconds unless the kernel is stuck on one.
const closeWait = 3 * time.Second

// worker is one started worker process.
type worker struct {
	cmd      *exec.Cmd
	jobW     *os.File // parent → worker
	resR     *os.File // worker → parent
	stderr   *limitedBuffer
	stderrWG sync.WaitGroup
	done     chan struct{} // closed when the process has been reaped
	waitErr  error
	cg       *workerCgroup
	nsMiss   map[string]string
	applied  []string // from the parent (namespaces, cgroup) and the ready message
	missing  map[string]string
	readyErr error
	ready    chan struct{} // closed when the ready message was read (or failed)
	started  time.Time
	// preload, when set, is the module sent to this warm worker ahead
	// of its job; preloadSent delivers the result of that write.
	preload     *moduleHint
	preloadSent chan error
	// id is the host uid and gid the worker switches to (0: none of
	// this Runtime's, the worker keeps the node's own uid).
	id int
	// staging is the worker's own cache directory; cacheSum the module
	// whose entry it may leave there (cacheKeep: to be kept; not for a
	// sealed module).
	staging   string
	cacheSum  [32]byte
	cacheKeep bool
	// killRefused: a kill found the worker alive but every way of ending
	// it was refused (no cgroup.kill, EPERM from the signals: a node
	// without CAP_KILL over a worker of another uid).
	killRefused atomic.Bool
}

func newJailer(ctx context.Context, cache *entryCache, warm int, bin *workerBinary, engine string) (*jailer, error) {
	j := &jailer{cache: cache, bin: bin, engine: engine, warm: max(warm, 0), nsMiss: map[string]string{}, live: map[*worker]struct{}{},
		exitWait: workerExitWait, writeTimeout: jobWriteTimeout}
	for _, ns := range namespaces {
		j.nsFlags |= ns.flag
	}
	if os.Geteuid() == 0 {
		if ids := newWorkerIDs(); idsMapped(workerIDFirst, workerIDFirst+workerIDBlocks*workerIDBlock-1) {
			j.ids = ids
		}
	}
	if os.Geteuid() == 0 && bin.noCgo {
		// A root parent needs no user namespace to create the others, and
		// a worker built without cgo can give up every capability but the
		// three its set-up needs on all of its threads (setupcaps). Without
		// CLONE_NEWUSER, Go starts the worker with vfork instead of copying
		// this process's whole address space (decision 0002).
		j.nsFlags &^= unix.CLONE_NEWUSER
		j.nsMiss["userns"] = "not created, by design: cloister runs as root and the worker, built without cgo, limits itself to CAP_SETUID and CAP_SETGID until the lock-down (setupcaps) and then switches to an unprivileged uid of its own; a user namespace would make every start copy the parent's address space (decision 0002)"
		// Such a worker can also join one empty network namespace made
		// once, instead of the kernel making and tearing down one per run.
		j.netns = newSharedNetns()
	}
	if j.nsFlags&unix.CLONE_NEWUSER != 0 {
		if why := foreignProc(); why != "" {
			// Starting a child in a user namespace writes its id maps to
			// /proc/PID/uid_map, PID as this namespace numbers it: with
			// another namespace's /proc that is some other process's file
			// (EPERM) or none (ENOENT), and every start would fail.
			j.nsFlags &^= unix.CLONE_NEWUSER
			j.nsMiss["userns"] = "not created: " + why
			if os.Geteuid() != 0 {
				// Unprivileged, the other namespaces need the user one.
				for _, ns := range namespaces {
					j.nsFlags &^= ns.flag
					if _, ok := j.nsMiss[ns.name]; !ok {
						j.nsMiss[ns.name] = "not created: it needs a user namespace for an unprivileged node, and " + why
					}
				}
			}
		}
	}
	j.cg, j.cgMiss = newCgroupManager()
	for i := 0; i < j.warm; i++ {
		j.refill(false)
	}
	return j, nil
}

// track records a started worker; a worker started after Close is killed
// at once (its starter reaps it).
func (j *jailer) track(w *worker) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.live[w] = struct{}{}
	if j.closed {
		w.kill()
		return false
	}
	return true
}

// forget drops a reaped and released worker.
func (j *jailer) forget(w *worker) {
	if w.id != 0 {
		j.ids.put(w.id)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	delete(j.live, w)
	j.checkEmptyLocked()
}

// started ends a spawn (its worker, if any, is in live by now).
func (j *jailer) started() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.starting--
	j.checkEmptyLocked()
}

// checkEmptyLocked tells a waiting Close that no worker is left or
// starting; j.mu is held.
func (j *jailer) checkEmptyLocked() {
	if len(j.live) == 0 && j.starting == 0 && j.emptied != nil {
		close(j.emptied)
		j.emptied = nil
	}
}

func (j *jailer) isClosed() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.closed
}

// close kills every worker at once — idle ones in the pool, ones starting up
// for it, and ones running a job (whose Run then returns ErrClosed) — and
// waits at most closeWait for them to be reaped before removing the
// Runtime's cgroup. Nothing here waits for a worker to finish by itself.
func (j *jailer) close() error {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil
	}
	j.closed = true
	idle := j.pool
	j.pool = nil
	live := make([]*worker, 0, len(j.live))
	for w := range j.live {
		live = append(live, w)
	}
	var emptied chan struct{}
	if len(j.live) > 0 || j.starting > 0 {
		emptied = make(chan struct{})
		j.emptied = emptied
	}
	j.mu.Unlock()

	for _, w := range live {
		w.kill()
	}
	// Idle workers have no owner but the pool: reap them here. Running
	// ones are reaped by their Run, starting ones by refill or spawn.
	for _, w := range idle {
		go j.reap(w)
	}
	timer := time.NewTimer(closeWait)
	defer timer.Stop()
	if emptied != nil {
		select {
		case <-emptied:
		case <-timer.C:
			j.mu.Lock()
			n := len(j.live)
			j.mu.Unlock()
			err := fmt.Errorf("isolate: closing: %d worker(s) not reaped within %v of SIGKILL; they and the cgroup are released in the background", n, closeWait)
			if j.cg != nil {
				go func() {
					<-emptied
					j.cg.close()
				}()
			}
			return err
		}
	}
	if j.cg != nil {
		return j.cg.close()
	}
	return nil
}

// spawn starts a worker, creating every namespace it can. If the kernel
// refuses the namespaces (no privilege, user namespaces disabled), it tries
// again without the user namespace, then without any, and remembers what it
// had to give up so that every report says so.
//
// A preload (warm workers only) is written to the worker in the background;
// runOn sends the job after it.
func (j *jailer) spawn(preload *moduleHint) (*worker, error) {
	j.mu.Lock()
	if j.closed {
		j.mu.Unlock()
		return nil, ErrClosed
	}
	flags := j.nsFlags
	j.starting++ // Close waits for this start too
	j.mu.Unlock()
	defer j.started()
	var firstErr error
	for attempt := 0; attempt < 3; attempt++ {
		w, err := j.start(flags)
		if err == nil {
			if !j.track(w) {
				j.reap(w)
				return nil, ErrClosed
			}
			if preload != nil {
				w.preload = preload
				j.stage(w, preload.sum, true)
				w.preloadSent = make(chan error, 1)
				go func() {
					w.preloadSent <- writeFrame(w.jobW, &workerInput{Preload: preload.module, PreloadDeterministic: preload.det})
				}()
			}
			return w, nil
		}
		if firstErr == nil {
			firstErr = err
		}
		if !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOSPC) && !errors.Is(err, syscall.EUSERS) {
			return nil, err
		}
		switch {
		case flags&unix.CLONE_NEWUSER != 0 && os.Geteuid() == 0:
			flags &^= unix.CLONE_NEWUSER
		case flags != 0:
			flags = 0
		default:
			return nil, err
		}
		j.mu.Lock()
		j.nsFlags = flags
		for _, ns := range namespaces {
			if flags&ns.flag == 0 {
				if _, ok := j.nsMiss[ns.name]; !ok {
					j.nsMiss[ns.name] = fmt.Sprintf("the kernel refused to create it: %v", firstErr)
				}
			}
		}
		j.mu.Unlock()
	}
	return nil, firstErr
}

func (j *jailer) start(flags uintptr) (*worker, error) {
	return j.startWith(flags, j.cg != nil)
}

func (j *jailer) startWith(flags uintptr, useCgroup bool) (*worker, error) {
	// The parent's frames go over a socket, not a pipe: a job's
	// descriptors travel with its frame (SCM_RIGHTS).
	jobR, jobW, err := socketPair()
	if err != nil {
		return nil, fmt.Errorf("isolate: worker socket: %w", err)
	}
	resR, resW, err := os.Pipe()
	if err != nil {
		jobR.Close()
		jobW.Close()
		return nil, fmt.Errorf("isolate: worker pipe: %w", err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		jobR.Close()
		jobW.Close()
		resR.Close()
		resW.Close()
		return nil, fmt.Errorf("isolate: worker pipe: %w", err)
	}
	netns := j.netns.file()
	if netns != nil {
		flags &^= unix.CLONE_NEWNET // the worker joins the shared one
	}
	var nsNames []string
	for _, ns := range namespaces {
		if flags&ns.flag != 0 {
			nsNames = append(nsNames, ns.name)
		}
	}
	cmd := exec.Command(j.bin.path)
	cmd.Args = []string{"cloister-isolate-worker"}
	cmd.Env = []string{
		workerEnv + "=1",
		workerNSEnv + "=" + strings.Join(nsNames, ","),
		// The Go runtime must not read cgroup files behind the worker's
		// back (they are gone after pivot_root, and open is forbidden).
		"GODEBUG=updatemaxprocs=0,containermaxprocs=0",
		// One job on one thread (its cgroup gets one CPU): fewer
		// threads make the all-thread uid switch and seccomp TSYNC
		// of the lock-down cheaper, on large machines most of all.
		"GOMAXPROCS=1",
		workerEngineEnv + "=" + j.engine,
	}
	var staging string
	if j.cache != nil {
		// A cache directory of the worker's own (cache_linux.go).
		if staging, err = j.cache.newStaging(); err != nil {
			jobR.Close()
			jobW.Close()
			resR.Close()
			resW.Close()
			errR.Close()
			errW.Close()
			return nil, err
		}
		cmd.Env = append(cmd.Env, workerCacheEnv+"="+staging)
	}
	cmd.Env = append(cmd.Env, j.testEnv...)
	if netns != nil {
		cmd.ExtraFiles = []*os.File{netns}
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", workerNetnsEnv, netnsFD))
	}
	cmd.Dir = "/"
	cmd.Stdin, cmd.Stdout, cmd.Stderr = jobR, resW, errW
	attr := &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Cloneflags: flags,
	}
	id := nobodyID // root without a block of its own (idsMapped)
	if j.ids != nil {
		if id, err = j.ids.get(); err != nil {
			jobR.Close()
			jobW.Close()
			resR.Close()
			resW.Close()
			errR.Close()
			errW.Close()
			return nil, err
		}
	}
	switch {
	case flags&unix.CLONE_NEWUSER != 0 && os.Geteuid() == 0:
		// Inside: 0 is the host's root (to set up the jail and read the
		// cache), 1 is the worker's own host id (workerids_linux.go),
		// which it becomes before the guest runs, losing every
		// capability.
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}, {ContainerID: 1, HostID: id, Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 0, Size: 1}, {ContainerID: 1, HostID: id, Size: 1}}
		attr.GidMappingsEnableSetgroups = true
		cmd.Env = append(cmd.Env, workerUIDEnv+"=1")
		// The group switch is done in the child before exec, on its one
		// thread (dropGroups then finds it done): in the worker it is two
		// calls that stop every thread. The uid stays 0 until the jail
		// is built.
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 1, Groups: []uint32{}}
	case flags&unix.CLONE_NEWUSER != 0:
		// Unprivileged: only our own uid can be mapped.
		attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
		attr.GidMappingsEnableSetgroups = false
	case os.Geteuid() == 0:
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=%d", workerUIDEnv, id))
		attr.Credential = &syscall.Credential{Uid: 0, Gid: uint32(id), Groups: []uint32{}} // as above
	}
	w := &worker{cmd: cmd, jobW: jobW, resR: resR, stderr: &limitedBuffer{max: 64 << 10}, staging: staging,
		done: make(chan struct{}), ready: make(chan struct{}), started: time.Now(),
		missing: map[string]string{}}
	if j.ids != nil {
		w.id = id
	}
	var cg *workerCgroup
	if !useCgroup && j.cg != nil {
		w.missing["cgroup"] = "starting the worker inside its cgroup failed; it runs without one"
	} else if j.cg != nil {
		cg, err = j.cg.newWorker()
		if err != nil {
			w.missing["cgroup"] = err.Error()
		} else {
			attr.UseCgroupFD = true
			attr.CgroupFD = cg.fd
		}
	} else {
		w.missing["cgroup"] = j.cgMiss
	}
	cmd.SysProcAttr = attr
	err = cmd.Start()
	jobR.Close()
	resW.Close()
	errW.Close()
	if cg != nil {
		cg.closeFD()
	}
	if err != nil {
		jobW.Close()
		resR.Close()
		errR.Close()
		if staging != "" {
			os.RemoveAll(staging)
		}
		if j.ids != nil {
			j.ids.put(id)
		}
		if cg != nil {
			cg.remove()
			// Do not blame the namespaces for a cgroup refusal: try
			// once more without the cgroup, and say so in the report.
			if w2, err2 := j.startWith(flags, false); err2 == nil {
				w2.missing["cgroup"] = fmt.Sprintf("starting the worker inside its cgroup failed: %v", err)
				return w2, nil
			}
		}
		return nil, fmt.Errorf("isolate: starting the worker: %w", err)
	}
	w.cg = cg
	w.applied = append([]string{"worker"}, nsNames...)
	if cg != nil {
		w.applied = append(w.applied, "cgroup")
	}
	j.mu.Lock()
	for k, v := range j.nsMiss {
		w.missing[k] = v
	}
	j.mu.Unlock()
	w.stderrWG.Add(1)
	go func() {
		defer w.stderrWG.Done()
		buf := make([]byte, 4096)
		for {
			n, err := errR.Read(buf)
			w.stderr.Write(buf[:n])
			if err != nil {
				errR.Close()
				return
			}
		}
	}()
	go func() {
		awaitExit(cmd.Process.Pid)
		w.waitErr = cmd.Wait()
		close(w.done)
	}()
	go func() {
		var msg readyMsg
		if err := readFrame(resR, maxControlFrame, &msg); err != nil {
			w.readyErr = err
		} else if err := checkProtocol(msg.Protocol); err != nil {
			w.readyErr = err
		} else if msg.Engine != j.engine {
			w.readyErr = fmt.Errorf("isolate: the worker runs the %q engine, not %q", msg.Engine, j.engine)
		} else if netns != nil && !slices.Contains(msg.Applied, "netns") {
			// Fail closed: a worker that did not join the node's network
			// namespace is in the host's.
			w.readyErr = fmt.Errorf("isolate: the worker did not join the node's network namespace (a worker binary from another build?)")
		} else {
			w.applied = append(w.applied, msg.Applied...)
			for k, v := range msg.Missing {
				w.missing[k] = v
			}
		}
		close(w.ready)
	}()
	return w, nil
}

// kill ends the worker and everything in its process group and cgroup.
func (w *worker) kill() {
	select {
	case <-w.done:
		// Reaped: its pid may belong to someone else by now.
		return
	default:
	}
	// A pending write to the worker ends now rather than when the
	// kernel gets round to the process.
	_ = w.jobW.SetWriteDeadline(time.Now())
	cgKilled := false
	if w.cg != nil {
		cgKilled = w.cg.kill() == nil
	}
	if w.cmd.Process != nil {
		errGroup := syscall.Kill(-w.cmd.Process.Pid, syscall.SIGKILL)
		errProc := w.cmd.Process.Kill()
		if !cgKilled && errors.Is(errGroup, syscall.EPERM) && errors.Is(errProc, syscall.EPERM) {
			w.killRefused.Store(true)
		}
	}
}

// killedText says how a worker ended after kill: killed, or, when the
// kill was refused, on its own (at its CPU-time rlimit at the latest).
func (w *worker) killedText() string {
	if w.killRefused.Load() {
		return fmt.Sprintf("killing the worker was refused (operation not permitted: the node lacks CAP_KILL over the worker's uid), so it ran on until it ended (%v; its own CPU-time limit ends it at the latest)", w.cmd.ProcessState)
	}
	return "the worker was killed"
}

// cleanup releases the pipes, the cgroup and the cache directory of a
// worker that has been reaped, keeping the cache entry it compiled.
func (w *worker) cleanup(cache *entryCache) {
	w.jobW.Close()
	w.resR.Close()
	waitBounded(&w.stderrWG, stderrWait)
	if w.cg != nil {
		w.cg.remove()
	}
	if w.staging != "" && cache != nil {
		cache.harvest(w.staging, w.cacheSum, w.cacheKeep)
	}
}

// stage gives w the cache entries of module sum (a sealed one has none,
// and leaves none: keep false).
func (j *jailer) stage(w *worker, sum [32]byte, keep bool) {
	w.cacheSum, w.cacheKeep = sum, keep
	if j.cache != nil && w.staging != "" && keep {
		j.cache.stage(w.staging, sum)
	}
}

// workerExitWait bounds the wait for a worker to be reaped once it has been
// sent SIGKILL (jailer.exitWait). The kernel normally takes milliseconds; a
// process stuck in the kernel is left to a background goroutine, and the
// caller is told.
const workerExitWait = 5 * time.Second

// jobWriteTimeout bounds writing a job to a worker, which reads it at once
// (jailer.writeTimeout).
const jobWriteTimeout = 30 * time.Second

// stderrWait bounds the wait for the rest of a dead worker's stderr.
const stderrWait = 2 * time.Second

// exited waits up to d for the worker to be reaped.
func (w *worker) exited(d time.Duration) bool {
	select {
	case <-w.done:
		return true
	default:
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-w.done:
		return true
	case <-t.C:
		return false
	}
}

// errNotReaped says a killed worker could not be reaped within
// d.
func (w *worker) errNotReaped(d time.Duration) error {
	pid := 0
	if w.cmd.Process != nil {
		pid = w.cmd.Process.Pid
	}
	return fmt.Errorf("isolate: the worker (pid %d) did not exit within %v of SIGKILL; it is left to be reaped in the background", pid, d)
}

func (j *jailer) run(ctx context.Context, jb *job, calls *callDispatcher) (*Result, error) {
	w, warm, err := j.get(jb)
	if err != nil {
		return nil, err
	}
	res, err := j.runOn(ctx, w, jb, calls)
	if err != nil && warm && errors.Is(err, errWorkerGone) && !j.isClosed() {
		// A pooled worker died while waiting (e.g. the node ran out of
		// memory); try once more with a fresh one.
		if w, err = j.spawn(nil); err != nil {
			return nil, err
		}
		return j.runOn(ctx, w, jb, calls)
	}
	return res, err
}

// reap kills a worker that is done with (or failed) its job, waits for it
// (at most workerExitWait) and releases its pipes and cgroup. A worker that
// is not reaped in time is released by a background goroutine whenever the
// kernel lets it go; reap then reports false.
func (j *jailer) reap(w *worker) bool {
	w.kill()
	if w.exited(j.exitWait) {
		w.cleanup(j.cache)
		j.forget(w)
		return true
	}
	go func() {
		<-w.done
		w.cleanup(j.cache)
		j.forget(w)
	}()
	return false
}

// readyTimeout bounds a worker's set-up before it can take a job.
const readyTimeout = 30 * time.Second

// waitBounded waits for wg, but not longer than d: a descriptor held open
// elsewhere must not hang a run.
func waitBounded(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

var errWorkerGone = errors.New("isolate: the worker exited before taking the job")

// runOn runs jb on w. calls answers the guest's host calls (nil: a job
// that may make none, as in tests that drive a worker directly).
func (j *jailer) runOn(ctx context.Context, w *worker, jb *job, calls *callDispatcher) (*Result, error) {
	if calls == nil {
		calls = newCallDispatcher(ctx, &Config{}, nil, nil)
	}
	start := time.Now()
	reaped := false
	defer func() {
		if !reaped {
			j.reap(w)
		}
	}()
	readyTimer := time.NewTimer(readyTimeout)
	defer readyTimer.Stop()
	select {
	case <-w.ready:
	case <-w.done:
	case <-readyTimer.C:
		// A worker that cannot even set up its jail in this time is
		// stuck; killing it makes the ready read fail below.
		w.kill()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	// The ready read ends once the worker is gone (its pipe closes).
	select {
	case <-w.ready:
	case <-time.After(j.exitWait):
		return nil, w.errNotReaped(j.exitWait)
	}
	if w.readyErr != nil {
		// Either the worker is gone, or it was refused at its first
		// message (another protocol, a step it did not take) and waits
		// for a job: kill it either way.
		w.kill()
		if !w.exited(j.exitWait) {
			return nil, w.errNotReaped(j.exitWait)
		}
		if j.isClosed() {
			return nil, ErrClosed
		}
		waitBounded(&w.stderrWG, stderrWait)
		return nil, fmt.Errorf("%w: %v%s", errWorkerGone, w.readyErr, tail(w.stderr))
	}
	if w.cg != nil {
		if err := w.cg.setMemory(jb.Memory); err != nil {
			w.missing["cgroup"] = err.Error()
		}
	}

	// Two deadlines: compiling (which happens in the worker, before the
	// lock-down message) is bounded by CompileTimeout; the program's own
	// Timeout starts when the worker says the guest is about to run, so a
	// first-time compilation does not eat into it.
	var didTimeout, didCompileTimeout, didCancel atomic.Bool
	compileTimer := time.AfterFunc(CompileTimeout, func() { didCompileTimeout.Store(true); w.kill() })
	defer compileTimer.Stop()
	stop := context.AfterFunc(ctx, func() { didCancel.Store(true); w.kill() })
	defer stop()

	// A worker holding the job's module gets the job without it.
	send := jb
	if w.preload != nil && w.preload.sum == jb.ModuleSHA256 {
		c := *jb
		c.Module = nil
		send = &c
	} else {
		j.stage(w, jb.ModuleSHA256, !jb.Sealed)
	}
	// Written here, not in another goroutine (one wake-up fewer on the
	// run's path). A worker that dies makes the write fail (EPIPE); one
	// that stops reading runs into the deadline, or into kill (compile
	// timer, ctx), which ends a pending write too.
	_ = w.jobW.SetWriteDeadline(time.Now().Add(j.writeTimeout))
	if w.preloadSent != nil {
		if err := <-w.preloadSent; err != nil {
			w.kill()
		}
	}
	// The run's CPU time is counted from here: the worker is set up
	// (and a warm one idle) before.
	cpu0, cpuOK := w.cpuTime()
	in := &workerInput{Job: send}
	if err := sendFrame(w.jobW, in, in.files()); err != nil {
		// Reading the lock-down message fails next; the worker's exit
		// status and stderr say why.
		w.kill()
	} else if len(jb.keys) > 0 {
		buf := encodeFrame(newSecretMsg(jb.keys))
		if _, err := w.jobW.Write(buf); err != nil {
			w.kill()
		}
		clear(buf)
	}

	var locked lockedMsg
	lockErr := readFrame(w.resR, maxControlFrame, &locked)
	compileTimer.Stop()
	var wr wireResult
	resErr := lockErr
	var protoErr error
	if lockErr == nil && !didCompileTimeout.Load() {
		timer := time.AfterFunc(jb.Timeout, func() { didTimeout.Store(true); w.kill() })
		defer timer.Stop()
		calls.start(jb.Timeout)
		protoErr, resErr = j.serve(w, jb, calls, &wr)
		calls.stop()
		timer.Stop()
		if protoErr != nil {
			w.kill()
		}
	}
	if resErr != nil {
		// Without a result the exit status and stderr explain what
		// happened: wait for them, a little for a worker that is
		// exiting by itself, then after a kill.
		if !w.exited(2 * time.Second) {
			w.kill()
			if !w.exited(j.exitWait) {
				return nil, w.errNotReaped(j.exitWait)
			}
		}
		waitBounded(&w.stderrWG, stderrWait)
	} else {
		// The result is in hand: the worker's exit (tearing down its
		// namespaces takes the kernel milliseconds) is waited for in the
		// background.
		reaped = true
		go j.reap(w)
	}

	protections := append([]string{}, w.applied...)
	missing := map[string]string{}
	for k, v := range w.missing {
		missing[k] = v
	}
	if lockErr == nil {
		protections = append(protections, locked.Applied...)
		for k, v := range locked.Missing {
			missing[k] = v
		}
		j.netns.observe(&locked)
	}
	finish := func(r *Result) *Result {
		sort.Strings(protections)
		r.Report.Protections = protections
		if len(missing) > 0 {
			r.Report.Missing = missing
		} else {
			r.Report.Missing = nil
		}
		r.Report.WallMS = time.Since(start).Milliseconds()
		r.Report.HostCalls = calls.answered.Load()
		r.Report.CPUMS = nil
		if cpu1, ok := w.cpuTime(); ok && cpuOK && cpu1 >= cpu0 {
			ms := (cpu1 - cpu0).Milliseconds()
			r.Report.CPUMS = &ms
		}
		return r
	}
	if protoErr != nil {
		return nil, fmt.Errorf("isolate: the worker broke the protocol: %w", protoErr)
	}
	if resErr == nil {
		if wr.Err != "" {
			return nil, fmt.Errorf("isolate: worker: %s", wr.Err)
		}
		r, err := wr.result(jb)
		if err != nil {
			return nil, err
		}
		if err := validateWorkerResult(&r, jb); err != nil {
			return nil, err
		}
		if wr.Probes != nil {
			r.probes = wr.Probes
		}
		return finish(&r), nil
	}

	// No result: the worker was killed or died.
	if j.isClosed() {
		return nil, ErrClosed
	}
	base := Result{Report: Report{ProgramSHA256: hex.EncodeToString(jb.ModuleSHA256[:]), Outputs: []OutputInfo{}, Deterministic: jb.Deterministic}}
	switch {
	case didTimeout.Load():
		base.Report.Outcome, base.Report.ExitCode = OutcomeTimeout, ExitTimeout
		base.Report.Error = fmt.Sprintf("wall-clock limit of %v reached; %s", jb.Timeout, w.killedText())
		return finish(&base), nil
	case didCompileTimeout.Load():
		base.Report.Outcome, base.Report.ExitCode = OutcomeTimeout, ExitTimeout
		base.Report.Error = fmt.Sprintf("compiling the module took longer than %v; %s", CompileTimeout, w.killedText())
		return finish(&base), nil
	case didCancel.Load():
		return nil, ctx.Err()
	}
	st, _ := w.cmd.ProcessState.Sys().(syscall.WaitStatus)
	errText := tail(w.stderr)
	switch {
	case w.cg != nil && w.cg.oomKilled():
		base.Report.Outcome, base.Report.ExitCode = OutcomeMemory, ExitMemory
		base.Report.Error = "the worker was killed by the cgroup memory limit"
	case st.Signaled() && (st.Signal() == syscall.SIGXCPU || (st.Signal() == syscall.SIGKILL && cpuTime(w.cmd.ProcessState) >= jb.Timeout.Seconds())):
		base.Report.Outcome, base.Report.ExitCode = OutcomeTimeout, ExitTimeout
		base.Report.Error = "CPU-time limit reached; the worker was killed"
	case strings.Contains(errText, "out of memory") || strings.Contains(errText, "cannot allocate memory"):
		base.Report.Outcome, base.Report.ExitCode = OutcomeMemory, ExitMemory
		base.Report.Error = "the worker ran out of address space" + tail(w.stderr)
	case lockErr != nil && st.Exited() && st.ExitStatus() == workerExitSetup:
		return nil, fmt.Errorf("isolate: the worker could not set up its jail%s", tail(w.stderr))
	default:
		base.Report.Outcome, base.Report.ExitCode = OutcomeTrap, ExitTrap
		base.Report.Error = fmt.Sprintf("the worker died (%v) without a result%s", w.cmd.ProcessState, tail(w.stderr))
	}
	return finish(&base), nil
}

// serve reads what the worker sends while the guest runs: host calls,
// each answered before the next is read, then the result. It returns a
// violation of the protocol by the worker (a frame of a kind or size not
// allowed here, a call out of sequence or for a call the job may not make:
// the guest's side of the worker checks all of these, so only a worker
// that stopped following its own code sends them), or the error of
// reading the result.
func (j *jailer) serve(w *worker, jb *job, calls *callDispatcher, wr *wireResult) (protoErr, err error) {
	// Stdout and stderr, and per output its name and block runs.
	_, blocks, _ := areaLayout(jb.MaxOutput, jb.MaxOutputFiles)
	maxResult := 2*jb.MaxStdio + int64(jb.MaxOutputFiles)*1024 + 16*int64(blocks) + 1<<20
	var maxCall int64
	for _, c := range jb.Calls {
		maxCall = max(maxCall, maxCallFrame(c))
	}
	bound := func(kind byte) int64 {
		switch kind {
		case kindResult:
			return maxResult
		case kindCall:
			return maxCall
		}
		return 0
	}
	for seq := uint64(1); ; seq++ {
		kind, body, err := readFrameOf(w.resR, bound)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrClosed) {
				return nil, err
			}
			return err, err
		}
		if kind == kindResult {
			return nil, decodeFrame(body, wr)
		}
		var c callMsg
		if err := decodeFrame(body, &c); err != nil {
			return err, err
		}
		call, ok := findCall(jb.Calls, c.Name)
		switch {
		case c.Seq != seq:
			err = fmt.Errorf("host call %d where %d was due", c.Seq, seq)
		case !ok:
			err = fmt.Errorf("host call %q, which the job may not make", c.Name)
		case int64(len(c.req)) > call.MaxRequest:
			err = fmt.Errorf("a %d-byte request to %s, whose limit is %d", len(c.req), c.Name, call.MaxRequest)
		}
		if err != nil {
			return err, err
		}
		status, resp, ended := calls.dispatch(c.Name, c.req)
		if ended {
			// The run is over: the guest gets no answer and is killed
			// (by the deadline's timer or Run's context) where it waits;
			// the frame read below ends when it is gone.
			continue
		}
		_ = w.jobW.SetWriteDeadline(time.Now().Add(j.writeTimeout))
		if err := sendFrame(w.jobW, &replyMsg{Seq: c.Seq, Status: status, resp: resp}, nil); err != nil {
			// The worker stopped reading: reading its result fails
			// next (it is killed at the deadline at the latest).
			w.kill()
		}
	}
}

func cpuTime(ps *os.ProcessState) float64 {
	return (ps.UserTime() + ps.SystemTime()).Seconds()
}

func tail(l *limitedBuffer) string {
	l.mu.Lock()
	s := strings.TrimSpace(l.buf.String())
	l.mu.Unlock()
	if s == "" {
		return ""
	}
	if len(s) > 2000 {
		s = "…" + s[len(s)-2000:]
	}
	return ": " + s
}

// validateWorkerResult checks what a possibly compromised worker sent back
// against the limits of the job, so that a bad worker cannot make the host
// write more, or other, than the guest was allowed to (the outputs were
// checked by wireResult.result).
func validateWorkerResult(r *Result, jb *job) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("isolate: the worker sent an invalid result: "+format, args...)
	}
	switch r.Report.Outcome {
	case OutcomeExited, OutcomeTimeout, OutcomeMemory, OutcomeTrap, OutcomeInvalid:
	default:
		return bad("unknown outcome %q", r.Report.Outcome)
	}
	if int64(len(r.Stdout)) > jb.MaxStdio || int64(len(r.Stderr)) > jb.MaxStdio {
		return bad("stdio beyond the %d-byte bound", jb.MaxStdio)
	}
	hit := r.Report.OutputLimitsHit
	switch {
	case len(hit) == 0:
		hit = nil
	case len(hit) == 1 && (hit[0] == LimitMaxOutput || hit[0] == LimitMaxOutputFiles):
	case len(hit) == 2 && hit[0] == LimitMaxOutput && hit[1] == LimitMaxOutputFiles:
	default:
		return bad("output limits hit %q", hit)
	}
	r.Report.OutputLimitsHit = hit
	setWarnings(&r.Report, jb)
	r.Report.ProgramSHA256 = hex.EncodeToString(jb.ModuleSHA256[:])
	r.Report.Deterministic = jb.Deterministic
	return nil
}

// IsWorker reports whether this process was started as a jailed worker by a
// Runtime (the parent sets a marker in the environment). Programs embedding
// the runtime call it first thing in main (or TestMain) and, when true, exit
// with WorkerMain's status.
func IsWorker() bool {
	v := os.Getenv(workerEnv)
	return v == "1" || v == workerProbe
}

// WorkerCommand is the whole main of a worker binary: WorkerMain's
// status when a Runtime started this process, else notWorker printed on
// stderr and status 2 (the binary is not meant to be run by hand).
func WorkerCommand(notWorker string) int {
	if !IsWorker() {
		fmt.Fprintln(os.Stderr, notWorker)
		return 2
	}
	return WorkerMain()
}

// workerProbe as the worker marker asks a worker binary only to print its
// protocol identifier (resolveWorkerBinary checks it before using it).
const workerProbe = "protocol"

// socketPair makes the parent–worker socket: the worker's end blocking
// (its stdin), the parent's non-blocking so that its writes honour
// deadlines and are ended by kill.
func socketPair() (worker, parent *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	if err := unix.SetNonblock(fds[1], true); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[0]), "worker socket"), os.NewFile(uintptr(fds[1]), "worker socket (parent)"), nil
}

// foreignProc says why /proc cannot serve this process's children, or "":
// a /proc mounted for another PID namespace (a process started in a new
// PID namespace without a proc file system of its own, as `unshare -p`
// without --mount-proc does) numbers processes differently from fork.
func foreignProc() string {
	self, err := os.Readlink("/proc/self")
	if err != nil {
		return "" // no /proc at all: exec of /proc/self/exe says so itself
	}
	if pid := strconv.Itoa(os.Getpid()); self != pid {
		return fmt.Sprintf("/proc belongs to another PID namespace (this process is %s here but %s in /proc), so a child's user-namespace id maps cannot be written; mount a proc file system for this namespace (unshare --mount-proc)", pid, self)
	}
	return ""
}
