package isolate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Hostile programs: each must end with its documented outcome, and the host
// must be unaffected. They run through the jailed worker, as in production.

// workerChildren lists live child processes of this test process.
func workerChildren(t *testing.T) []int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	var kids []int
	me := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 {
			if ppid, _ := strconv.Atoi(f[1]); ppid == me {
				kids = append(kids, pid)
			}
		}
	}
	return kids
}

// newChildren waits up to d for every child of this process that is not in
// before to be gone, and describes those still there (pid, state, command
// line). A killed worker is reaped before its run returns; d only covers
// processes this test did not start that end on their own.
func newChildren(t *testing.T, before []int, d time.Duration) []string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var left []int
		for _, pid := range workerChildren(t) {
			if !slices.Contains(before, pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var out []string
			for _, pid := range left {
				stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
				cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				out = append(out, fmt.Sprintf("pid %d stat %.80q cmdline %q", pid, stat, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
			}
			return out
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHostileInfiniteLoop(t *testing.T) {
	r := newRuntime(t, Options{})
	before := workerChildren(t)
	start := time.Now()
	res := mustRun(t, r, &Config{Module: wasmLoop, Timeout: time.Second})
	took := time.Since(start)
	wantOutcome(t, res, OutcomeTimeout, ExitTimeout)
	// Not sooner than the limit; no upper wall-clock bound (the compile
	// is part of it, and mustRun bounds the wait).
	if took < time.Second {
		t.Errorf("timeout of 1s returned after %v", took)
	}
	if left := newChildren(t, before, 5*time.Second); len(left) > 0 {
		t.Errorf("%d child process(es) started during the run still alive after the timeout: %s", len(left), strings.Join(left, "; "))
	}

	// In process, wazero's cancellation stops the loop instead.
	ri := newRuntime(t, Options{InProcess: true})
	start = time.Now()
	res = mustRun(t, ri, &Config{Module: wasmLoop, Timeout: 500 * time.Millisecond})
	wantOutcome(t, res, OutcomeTimeout, ExitTimeout)
	if took := time.Since(start); took < 500*time.Millisecond {
		t.Errorf("in-process timeout of 500ms returned after %v", took)
	}
}

func TestHostileDeepRecursion(t *testing.T) {
	r := newRuntime(t, Options{})
	res := mustRun(t, r, &Config{Module: wasmRecurse, Timeout: time.Minute})
	wantOutcome(t, res, OutcomeTrap, ExitTrap)
	if !strings.Contains(res.Report.Error, "stack overflow") {
		t.Errorf("error %q does not say stack overflow", res.Report.Error)
	}
}

func TestHostileMemory(t *testing.T) {
	r := newRuntime(t, Options{})
	t.Run("grow-then-trap", func(t *testing.T) {
		res := mustRun(t, r, &Config{Module: wasmGrowThenTrap, Memory: 2 << 20})
		wantOutcome(t, res, OutcomeMemory, ExitMemory)
	})
	t.Run("initial-memory-over-ceiling", func(t *testing.T) {
		res := mustRun(t, r, &Config{Module: wasmModule(nil, 2048, nil), Memory: 64 << 20})
		wantOutcome(t, res, OutcomeMemory, ExitMemory)
		if !strings.Contains(res.Report.Error, "2048 pages") {
			t.Errorf("error %q does not give the page count", res.Report.Error)
		}
	})
	t.Run("go-memory-bomb", func(t *testing.T) {
		res := mustRun(t, r, &Config{Module: hostileGuest(t), Name: "membomb", Memory: 64 << 20, Timeout: time.Minute})
		wantOutcome(t, res, OutcomeMemory, ExitMemory)
		if !bytes.Contains(res.Stderr, []byte("out of memory")) {
			t.Errorf("the Go runtime's stderr %.500q does not say out of memory", res.Stderr)
		}
		if !strings.Contains(res.Report.Error, "exited with status 2") {
			t.Errorf("report error %q does not keep the program's own status", res.Report.Error)
		}
	})
}

func TestHostileOutputFlood(t *testing.T) {
	r := newRuntime(t, Options{})
	res := mustRun(t, r, &Config{Module: hostileGuest(t), Name: "flood", MaxOutput: 4 << 20, MaxStdio: 1 << 20, Timeout: time.Minute})
	wantOutcome(t, res, OutcomeExited, 0)
	if !res.Report.OutputLimited || !res.Report.StdoutTruncated || !res.Report.StderrTruncated {
		t.Errorf("limits not flagged: output %v stdout %v stderr %v", res.Report.OutputLimited, res.Report.StdoutTruncated, res.Report.StderrTruncated)
	}
	if len(res.Stdout) != 1<<20 || len(res.Stderr) != 1<<20 {
		t.Errorf("stdio kept %d/%d bytes, want exactly 1 MiB each", len(res.Stdout), len(res.Stderr))
	}
	if !bytes.HasPrefix(res.Stdout, []byte("wrote 4194304 bytes; create second: <nil>; write second: 0 ")) {
		t.Errorf("stdout starts %.200q", res.Stdout)
	}
	if !bytes.Contains(res.Stderr, []byte("write error: write /output/flood.bin: No space left on device")) {
		t.Errorf("stderr starts %.200q", res.Stderr)
	}
	var total int64
	for _, o := range res.Report.Outputs {
		total += o.Bytes
	}
	if total != 4<<20 || len(res.Outputs) != 2 || res.Outputs[0].Size != 4<<20 || len(outputBytes(t, res.Outputs[0])) != 4<<20 {
		t.Errorf("outputs total %d bytes in %d files, want 4 MiB in flood.bin + empty second.bin", total, len(res.Outputs))
	}
}

func TestHostileManyFiles(t *testing.T) {
	r := newRuntime(t, Options{})
	res := mustRun(t, r, &Config{Module: hostileGuest(t), Name: "manyfiles", MaxOutputFiles: 100, Timeout: time.Minute})
	wantOutcome(t, res, OutcomeExited, 0)
	if !bytes.HasPrefix(res.Stdout, []byte("created 100 files; then: open /output/f00100: Quota exceeded")) {
		t.Errorf("stdout %q", res.Stdout)
	}
	if len(res.Outputs) != 100 || !res.Report.OutputLimited || fmt.Sprint(res.Report.OutputLimitsHit) != "[max_output_files]" {
		t.Errorf("%d outputs (limited=%v, limits hit %q), want 100 and max_output_files", len(res.Outputs), res.Report.OutputLimited, res.Report.OutputLimitsHit)
	}
}

func TestHostileFileSystemEscape(t *testing.T) {
	r := newRuntime(t, Options{})
	res := mustRun(t, r, &Config{
		Module: hostileGuest(t), Name: "fsescape", Args: []string{"a b", "--x"},
		Env:     []string{"ONLY=this"},
		Inputs:  []Input{{Name: "data", Data: []byte("hello")}},
		Timeout: time.Minute,
	})
	wantOutcome(t, res, OutcomeExited, 0)
	out := string(res.Stdout)
	for _, want := range []string{
		"list /: [input output]\n",
		"list /input: [data]\n",
		"list /output: []\n",
		"list /input/../..: [input output]\n",
		"list /input/../../..: [input output]\n",
		"list /output/..: [input output]\n",
		"list /etc: error: open /etc: No such file or directory\n",
		"list /proc: error: open /proc: No such file or directory\n",
		"read /etc/passwd: error: open /etc/passwd: No such file or directory\n",
		"read /input/../../etc/passwd: error: open /input/../../etc/passwd: No such file or directory\n",
		"read ../../../../etc/passwd: error",
		"read /proc/self/environ: error: open /proc/self/environ: No such file or directory\n",
		"read /input/data: 5 bytes\n",
		"read /input/./data: 5 bytes\n",
		// Go's wasip1 port cleans the path itself, so this opens /input.
		"read /input/data/..: error: read /input/data/..: Is a directory\n",
		"symlink: error: symlink /etc/passwd /output/link: Operation not permitted\n",
		"mkdir: error: mkdir /output/sub: Operation not permitted\n",
		`env: ["ONLY=this"]` + "\n",
		`args: ["fsescape" "a b" "--x"]` + "\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q\nfull output:\n%s", want, out)
		}
	}
	if strings.Contains(out, "root:") || len(res.Outputs) != 0 {
		t.Errorf("host data leaked or outputs left: %q %v", out, res.Outputs)
	}
}

func TestHostileWriteInput(t *testing.T) {
	r := newRuntime(t, Options{})
	res := mustRun(t, r, &Config{Module: hostileGuest(t), Name: "writeinput", Inputs: []Input{{Name: "data", Data: []byte("original")}}, Timeout: time.Minute})
	wantOutcome(t, res, OutcomeExited, 0)
	out := string(res.Stdout)
	if strings.Contains(out, "ALLOWED") || strings.Count(out, ": refused: ") != 9 || !strings.Contains(out, "unchanged: true") {
		t.Errorf("writes to /input were not all refused:\n%s", out)
	}
	for _, want := range []string{"writefile: refused: open /input/data: Read-only file system", "create: refused: open /input/new: Read-only file system", "remove: refused: remove /input/data: Read-only file system"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if len(res.Outputs) != 0 {
		t.Errorf("outputs appeared: %v", res.Report.Outputs)
	}
}

func TestHostileNetworkDial(t *testing.T) {
	// A real listener on the host's loopback: the guest is told its
	// address and must not reach it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan struct{}, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
			accepted <- struct{}{}
		}
	}()
	r := newRuntime(t, Options{})
	res := mustRun(t, r, &Config{Module: hostileGuest(t), Name: "netdial", Args: []string{l.Addr().String(), "1.1.1.1:80"}, Timeout: time.Minute})
	wantOutcome(t, res, OutcomeExited, 0)
	out := string(res.Stdout)
	if strings.Contains(out, "CONNECTED") || strings.Count(out, ": refused: ") != 2 {
		t.Errorf("network reachable from the guest:\n%s", out)
	}
	select {
	case <-accepted:
		t.Errorf("the host listener accepted a connection from the guest")
	case <-time.After(100 * time.Millisecond):
	}
}

// TestWorkerSelfTest checks the jail from inside the worker: after the
// lock-down, forbidden system calls fail with EPERM (seccomp), the network
// namespace holds only a loopback that is down, and the root is empty.
func TestWorkerSelfTest(t *testing.T) {
	for _, k := range workerKinds {
		t.Run(k.name, func(t *testing.T) { testWorkerSelfTest(t, k.binary) })
	}
}

// selfTestRun runs the empty module in a worker of r that probes its own
// jail (Result.probes).
func selfTestRun(t *testing.T, r *Runtime) *Result {
	t.Helper()
	j := selfTestJob(t)
	ctx, cancel := context.WithTimeout(context.Background(), runBound(&Config{}))
	defer cancel()
	res, err := r.jail.run(ctx, j, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantOutcome(t, res, OutcomeExited, 0)
	return res
}

func testWorkerSelfTest(t *testing.T, worker string) {
	res := selfTestRun(t, newRuntime(t, Options{WorkerBinary: worker}))
	p := res.probes
	t.Logf("probes: %v; protections %v; missing %v", p, res.Report.Protections, res.Report.Missing)
	if hasString(res.Report.Protections, "seccomp") {
		for _, name := range []string{"socket", "open", "ptrace", "mount", "execve", "unshare", "fork"} {
			if p[name] != "operation not permitted" {
				t.Errorf("%s inside the worker: %q, want operation not permitted (EPERM from seccomp)", name, p[name])
			}
		}
	} else {
		t.Logf("seccomp not in force here: %s", res.Report.Missing["seccomp"])
	}
	if hasString(res.Report.Protections, "netns") && p["interfaces"] != "lo:down" {
		t.Errorf("network interfaces in the worker: %q, want only a down loopback", p["interfaces"])
	}
	if hasString(res.Report.Protections, "emptyroot") && p["root"] != "cache" && p["root"] != "" {
		t.Errorf("worker root holds %q, want nothing but the cache mount point", p["root"])
	}
	// Root without a user namespace: before the lock-down the worker holds
	// CAP_SETUID and CAP_SETGID and nothing else.
	if hasString(res.Report.Protections, "setupcaps") {
		if want := "0xc0"; p["caps"] != want {
			t.Errorf("capabilities before the lock-down: %s, want %s", p["caps"], want)
		}
		if hasString(res.Report.Protections, "userns") {
			t.Errorf("setupcaps in force together with a user namespace: %v", res.Report.Protections)
		}
	}
	if hasString(res.Report.Protections, "rlimit") && p["area_past_size"] != "file too large" {
		t.Errorf("writing past the output area's size: %q, want file too large (RLIMIT_FSIZE)", p["area_past_size"])
	}
	for _, in := range []string{"data", "file"} {
		if c := p["write_input_"+in]; c == "allowed" || c == "" {
			t.Errorf("writing to input %s inside the worker: %q, want it refused", in, c)
		}
	}
	if c := p["cache_after_uid_switch"]; !strings.Contains(c, "permission denied") && !strings.Contains(c, "no such file") {
		t.Errorf("the compilation cache after the uid switch: %q, want permission denied (or gone)", c)
	}
	if os.Geteuid() == 0 && worker != WorkerBinarySelf && !hasString(res.Report.Protections, "setupcaps") {
		t.Errorf("a root node's lean worker runs without setupcaps: %v (missing %v)", res.Report.Protections, res.Report.Missing)
	}
}

// TestSharedNetns: a root node's lean workers join one empty network
// namespace once seccomp is known to work (the first worker gets its own),
// see only a loopback that is down in it, and cannot open sockets; a worker
// without seccomp sends them back to namespaces of their own.
func TestSharedNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the shared network namespace is for root nodes")
	}
	own, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, Options{})
	if r.jail.netns == nil {
		t.Fatal("a root node with the lean worker made no shared network namespace")
	}
	// Making it left no thread of this process in it.
	tasks, _ := os.ReadDir("/proc/self/task")
	for _, task := range tasks {
		if ns, err := os.Readlink("/proc/self/task/" + task.Name() + "/ns/net"); err == nil && ns != own {
			t.Errorf("thread %s is in network namespace %s, the process in %s", task.Name(), ns, own)
		}
	}
	// The shared namespace's cookie, read on a thread that joins it and
	// dies with the goroutine.
	cookie := make(chan string, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(r.jail.netns.f.Fd()), unix.CLONE_NEWNET); err != nil {
			cookie <- "setns: " + err.Error()
			return
		}
		c, err := netnsCookie()
		if err != nil {
			cookie <- err.Error()
			return
		}
		cookie <- fmt.Sprint(c)
	}()
	shared := <-cookie
	selfTest := func() map[string]string {
		res := selfTestRun(t, r)
		if !hasString(res.Report.Protections, "netns") || !hasString(res.Report.Protections, "seccomp") {
			t.Fatalf("protections %v, missing %v", res.Report.Protections, res.Report.Missing)
		}
		if res.probes["interfaces"] != "lo:down" || res.probes["socket"] != "operation not permitted" {
			t.Errorf("in the worker: interfaces %q, socket %q", res.probes["interfaces"], res.probes["socket"])
		}
		return res.probes
	}
	first := selfTest()
	if first["netns_cookie"] == shared || strings.HasPrefix(first["netns_cookie"], "error") {
		t.Errorf("the first worker joined the shared namespace before seccomp was known to work")
	}
	if r.jail.netns.file() == nil {
		t.Fatal("seccomp was in force, yet the shared namespace is not used")
	}
	for range 2 {
		if p := selfTest(); p["netns_cookie"] != shared {
			t.Errorf("worker's network namespace %s, want the shared one %s", p["netns_cookie"], shared)
		}
	}
	r.jail.netns.observe(&lockedMsg{Missing: map[string]string{"seccomp": "unavailable"}})
	r.jail.netns.observe(&lockedMsg{Applied: []string{"seccomp"}})
	if r.jail.netns.file() != nil {
		t.Errorf("after a worker ran without seccomp the shared namespace is still handed out")
	}
	if p := selfTest(); p["netns_cookie"] == shared {
		t.Errorf("a worker joined the shared namespace after one ran without seccomp")
	}
}

// TestSetupCapsFailureDropsAtOnce: a root worker without a user namespace
// that cannot limit its capabilities (here: a cgo binary, which cannot set
// them on all threads) becomes nobody before it reads any module, compiles
// without the cache, and says so; the run still works.
func TestSetupCapsFailureDropsAtOnce(t *testing.T) {
	if os.Geteuid() != 0 || selfNoCgo() {
		t.Skip("needs root and a cgo test binary")
	}
	cache, err := openEntryCache(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := newJailer(context.Background(), cache, 0, &workerBinary{path: "/proc/self/exe", noCgo: true}, EngineWazero)
	if err != nil {
		t.Fatal(err)
	}
	defer j.close()
	defer j.netns.close()
	jb := openedJob(t, &Config{Module: wasmEmpty})
	jb.SelfTest = true
	ctx, cancel := context.WithTimeout(context.Background(), runBound(&Config{}))
	defer cancel()
	res, err := j.run(ctx, jb, nil)
	if err != nil {
		t.Fatal(err)
	}
	wantOutcome(t, res, OutcomeExited, 0)
	if why := res.Report.Missing["setupcaps"]; !strings.Contains(why, "drops its privileges before reading the module") {
		t.Errorf("setupcaps missing: %q", why)
	}
	if hasString(res.Report.Protections, "setupcaps") || !hasString(res.Report.Protections, "nocaps") || !hasString(res.Report.Protections, "seccomp") {
		t.Errorf("protections %v", res.Report.Protections)
	}
	if res.probes["caps"] != "0x0" {
		t.Errorf("capabilities before the guest's lock-down: %s, want none", res.probes["caps"])
	}
}

// TestWorkerBinaryChecked: a worker binary that is not cloister-isolate,
// or speaks another protocol, is refused with the reason.
func TestWorkerBinaryChecked(t *testing.T) {
	writable := filepath.Join(t.TempDir(), "cloister-isolate")
	if b, err := os.ReadFile(leanWorker); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(writable, b, 0o777); err != nil {
		t.Fatal(err)
	}
	os.Chmod(writable, 0o777) // past the umask
	for _, bad := range []struct{ path, want string }{
		{writable, "writable by group or others"},
		{"/bin/sh", "not a Go program"},
		{os.Args[0], "not github.com/cloisterhq/cloister/cmd/cloister-isolate"},
		{filepath.Join(t.TempDir(), "absent"), "no such file"},
	} {
		_, err := New(context.Background(), Options{WorkerBinary: bad.path})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("worker binary %s: error %v, want it to say %q", bad.path, err, bad.want)
		}
	}
	// A live worker refused at its first message is killed at once, and
	// the run says why.
	func() {
		r := newRuntime(t, Options{})
		own := workerProtocol
		workerProtocol = func() string { return "cloister-isolate/0+another-build" }
		defer func() { workerProtocol = own }()
		// Killed, not left waiting for a job: errWorkerGone (one left
		// alive would end in errNotReaped instead).
		_, err := r.Run(context.Background(), &Config{Module: wasmEmpty})
		if !errors.Is(err, errWorkerGone) || !strings.Contains(err.Error(), "another protocol") {
			t.Errorf("a worker of another protocol: %v", err)
		}
	}()
	// The probe at New asks the binary itself.
	self := &workerBinary{path: "/proc/self/exe"}
	if err := self.probe(); err != nil {
		t.Errorf("probing this binary: %v", err)
	}
	func() {
		own := workerProtocol
		workerProtocol = func() string { return "cloister-isolate/0+another-build" }
		defer func() { workerProtocol = own }()
		if err := self.probe(); !errors.Is(err, errWorkerProtocol) {
			t.Errorf("probing a binary of another protocol: %v", err)
		}
	}()
	if err := checkProtocol("cloister-isolate/0+0000"); !errors.Is(err, errWorkerProtocol) {
		t.Errorf("another protocol: %v", err)
	}
	if err := checkProtocol(workerProtocol()); err != nil {
		t.Errorf("own protocol: %v", err)
	}
	r := newRuntime(t, Options{})
	if name, note := r.WorkerBinary(); name != leanWorker || note != "" {
		t.Errorf("WorkerBinary() = %q, %q; want %q", name, note, leanWorker)
	}
	r = newRuntime(t, Options{WorkerBinary: WorkerBinarySelf})
	if name, note := r.WorkerBinary(); name != "this binary re-executed" || note == "" {
		t.Errorf("self: WorkerBinary() = %q, %q", name, note)
	}
}

func TestInvalidModules(t *testing.T) {
	r := newRuntime(t, Options{})
	for _, tc := range []struct {
		name   string
		module []byte
		want   string
	}{
		{"garbage", []byte("definitely not wasm"), "invalid module"},
		{"empty", nil, "the module is empty"},
		{"truncated", wasmEmpty[:len(wasmEmpty)-3], "invalid module"},
		{"no-start", []byte("\x00asm\x01\x00\x00\x00"), "no _start"},
		{"unknown-import", wasmUnknownImport, "env.launch_missiles"},
		{"unknown-wasi-function", wasmModule([][2]string{{"wasi_snapshot_preview1", "sock_open"}}, 1, nil), "wasi_snapshot_preview1.sock_open"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := mustRun(t, r, &Config{Module: tc.module})
			wantOutcome(t, res, OutcomeInvalid, ExitInvalid)
			if !strings.Contains(res.Report.Error, tc.want) {
				t.Errorf("error %q does not mention %q", res.Report.Error, tc.want)
			}
		})
	}
}

func TestBadInputsAndEnv(t *testing.T) {
	r := newRuntime(t, Options{})
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Inputs: []Input{{Name: "../x", Data: []byte("1")}}}, "not a file name"},
		{Config{Inputs: []Input{{Name: "a/b/c", Data: []byte("1")}}}, "plain file name"}, // a/b is a directory's file
		{Config{Inputs: []Input{{Name: "", Data: []byte("1")}}}, "empty"},
		{Config{Inputs: []Input{{Name: "..", Data: []byte("1")}}}, "not a file name"},
		{Config{Inputs: []Input{{Name: "a", Data: []byte("1")}, {Name: "a", Data: []byte("2")}}}, "given twice"},
		{Config{Inputs: []Input{{Name: "a", Path: "/nonexistent/file"}}}, "no such file"},
		{Config{Env: []string{"NOVALUE"}}, "KEY=VALUE"},
		{Config{Env: []string{"=x"}}, "KEY=VALUE"},
	} {
		tc.cfg.Module = wasmEmpty
		res := mustRun(t, r, &tc.cfg)
		wantOutcome(t, res, OutcomeInvalid, ExitInvalid)
		if !strings.Contains(res.Report.Error, tc.want) {
			t.Errorf("error %q does not mention %q", res.Report.Error, tc.want)
		}
	}
}

func TestExitStatusPassThrough(t *testing.T) {
	r := newRuntime(t, Options{})
	for _, code := range []uint32{0, 1, 3, 42, 255} {
		res := mustRun(t, r, &Config{Module: wasmExit(code)})
		wantOutcome(t, res, OutcomeExited, int(code))
	}
}

func TestDeterminism(t *testing.T) {
	r := newRuntime(t, Options{})
	mod := hostileGuest(t)
	run := func(det bool, seed byte) *Result {
		cfg := &Config{Module: mod, Name: "determinism", Deterministic: det, Inputs: []Input{{Name: "data", Data: []byte("same input")}}, Timeout: time.Minute}
		cfg.Seed[0] = seed
		res := mustRun(t, r, cfg)
		wantOutcome(t, res, OutcomeExited, 0)
		return res
	}
	a, b, c := run(true, 1), run(true, 1), run(true, 2)
	if !bytes.Equal(a.Stdout, b.Stdout) || fmt.Sprint(a.Report.Outputs) != fmt.Sprint(b.Report.Outputs) {
		t.Errorf("same seed, different runs:\n%s\n---\n%s", a.Stdout, b.Stdout)
	}
	if !bytes.Contains(a.Stdout, []byte("now: 2000-01-01T00:00:00Z\n")) || !bytes.Contains(a.Stdout, []byte("slept ≥10ms: true")) {
		t.Errorf("deterministic clock not as documented:\n%s", a.Stdout)
	}
	if bytes.Equal(a.Stdout, c.Stdout) || a.Report.Outputs[0].SHA256 == c.Report.Outputs[0].SHA256 {
		t.Errorf("different seeds gave the same randomness")
	}
	d, e := run(false, 0), run(false, 0)
	if bytes.Equal(d.Stdout, e.Stdout) || bytes.Contains(d.Stdout, []byte("now: 2000-01-01")) {
		t.Errorf("without --deterministic, runs should see real clocks and randomness:\n%s", d.Stdout)
	}
}

func TestWarmPool(t *testing.T) {
	r := newRuntime(t, Options{WarmWorkers: 2})
	for i := 0; i < 5; i++ {
		res := mustRun(t, r, &Config{Module: wasmExit(uint32(i))})
		wantOutcome(t, res, OutcomeExited, i)
		if !hasString(res.Report.Protections, "worker") {
			t.Fatalf("pooled run without worker: %v", res.Report.Protections)
		}
	}
	// The pool refills itself to its size.
	deadline := time.Now().Add(20 * time.Second)
	for r.jail.pooled() < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := r.jail.pooled(); n != 2 {
		t.Errorf("pool holds %d workers, want 2", n)
	}
	// A timeout from the pool kills that worker only.
	res := mustRun(t, r, &Config{Module: wasmLoop, Timeout: 300 * time.Millisecond})
	wantOutcome(t, res, OutcomeTimeout, ExitTimeout)
	res = mustRun(t, r, &Config{Module: wasmEmpty})
	wantOutcome(t, res, OutcomeExited, 0)
}

// TestCacheDirMadePrivate: a compilation cache directory that already
// exists with a looser mode is made private (workers of a root node keep
// the guest out of it by its mode alone).
func TestCacheDirMadePrivate(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "wazero-cache"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "wazero-cache"), 0o755)
	newRuntime(t, Options{DataDir: dir})
	fi, err := os.Stat(filepath.Join(dir, "wazero-cache"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache directory mode %v, %v; want 0700", fi.Mode().Perm(), err)
	}
}

// selfTestJob is an empty module's job with the worker's self-test on; it
// has an input in memory and one from a file.
func selfTestJob(t *testing.T) *job {
	t.Helper()
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, []byte("file input"), 0o600); err != nil {
		t.Fatal(err)
	}
	j := openedJob(t, &Config{Module: wasmEmpty, Inputs: []Input{{Name: "data", Data: []byte("data input")}, {Name: "file", Path: path}}})
	j.SelfTest = true
	return j
}

// TestWorkerIDs: a root node's workers each run as a uid and gid of their
// own, from their Runtime's block, never two live workers with the same
// one; an id is handed out again only once its worker is gone.
func TestWorkerIDs(t *testing.T) {
	p := newWorkerIDs()
	seen := map[int]bool{}
	for range workerIDBlock {
		id, err := p.get()
		if err != nil || seen[id] || !p.contains(id) {
			t.Fatalf("id %d (%v): repeated or outside the block", id, err)
		}
		seen[id] = true
	}
	if _, err := p.get(); err == nil {
		t.Fatal("an id was handed out while every one is in use")
	}
	p.put(int(p.base) + 7)
	if id, err := p.get(); err != nil || id != int(p.base)+7 {
		t.Fatalf("after one was returned: %d, %v", id, err)
	}
	// Only where the whole range is mapped: a node that is root in a
	// rootless container's user namespace keeps the shared nobody.
	for idMap, want := range map[string]bool{
		"         0          0 4294967295\n": true,
		"0 1000 1\n1 100000 65536\n":         false,
		"0 0 2147483648\n":                   true,
		"0 0 1879048192\n":                   false, // ends at 0x70000000
	} {
		if got := rangeMapped(idMap, workerIDFirst, workerIDFirst+workerIDBlocks*workerIDBlock-1); got != want {
			t.Errorf("range mapped by %q: %v, want %v", idMap, got, want)
		}
	}

	if os.Geteuid() != 0 {
		t.Skip("workers keep the node's own uid when it is not root")
	}
	r := newRuntime(t, Options{WarmWorkers: 3})
	j := selfTestJob(t)
	ctx, cancel := context.WithTimeout(context.Background(), runBound(&Config{}))
	defer cancel()
	type outcome struct {
		res *Result
		err error
	}
	out := make(chan outcome, 3)
	for range 3 {
		go func() {
			jb := *j
			res, err := r.jail.run(ctx, &jb, nil)
			out <- outcome{res, err}
		}()
	}
	ids := map[string]bool{}
	for range 3 {
		o := <-out
		if o.err != nil {
			t.Fatal(o.err)
		}
		wantOutcome(t, o.res, OutcomeExited, 0)
		ids[o.res.probes["ids"]] = true
	}
	if len(ids) != 3 {
		t.Fatalf("three concurrent workers ran as %v, want three different ids", ids)
	}
	for s := range ids {
		var uid, gid int
		if _, err := fmt.Sscanf(s, "%d/%d", &uid, &gid); err != nil || uid != gid {
			t.Fatalf("worker ids %q", s)
		}
		if uid != 1 && !r.jail.ids.contains(uid) { // 1: inside a user namespace
			t.Errorf("worker uid %d is outside its Runtime's block", uid)
		}
	}
}
