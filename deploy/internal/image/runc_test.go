package image

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/loopback"
)

// The tests in this file start the image's binaries the way a Kubernetes
// node's runtime would — with runc, from the image's own root file system,
// read-only, with the user, capabilities and namespaces the chart gives
// each component — and check what the jailed worker got (its run report)
// and that a validator answers.

// bundle is an OCI runtime bundle made from the image.
type bundle struct {
	dir, rootfs, data string
}

var rootfsOnce sync1

// sync1 unpacks the image once for every runc test.
type sync1 struct {
	done   bool
	rootfs string
	err    error
}

func unpackedRootfs(t *testing.T) string {
	t.Helper()
	if !rootfsOnce.done {
		rootfsOnce.done = true
		path, _ := builtImage(t)
		dir := filepath.Join(builtDir, "unpacked")
		img, err := Open(path, filepath.Join(dir, "layout"))
		if err == nil {
			err = Unpack(img, filepath.Join(dir, "rootfs"))
		}
		rootfsOnce.rootfs, rootfsOnce.err = filepath.Join(dir, "rootfs"), err
	}
	if rootfsOnce.err != nil {
		t.Fatal(rootfsOnce.err)
	}
	return rootfsOnce.rootfs
}

func needRunc(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("runc needs root here")
	}
	p, err := exec.LookPath("runc")
	if err != nil {
		t.Fatal("runc not found: install Debian's runc (./scripts/test does)")
	}
	return p
}

// runSpec is what one container gets.
type runSpec struct {
	args        []string
	uid         int
	caps        []string // effective = permitted = bounding
	noNewPrivs  bool
	hostNetwork bool
	mounts      []map[string]any
}

// config is an OCI runtime configuration like the one a CRI runtime makes
// for a pod's container from the chart's securityContext: read-only root,
// the given user and capabilities, no seccomp or AppArmor profile
// (Unconfined, as the chart's node), /proc paths masked as runtimes do.
func (s runSpec) config(rootfs, data string) map[string]any {
	caps := s.caps
	if caps == nil {
		caps = []string{}
	}
	ns := []map[string]any{{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}}
	if !s.hostNetwork {
		ns = append(ns, map[string]any{"type": "network"})
	}
	mounts := []map[string]any{
		{"destination": "/proc", "type": "proc", "source": "proc", "options": []string{"nosuid", "noexec", "nodev"}},
		{"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
		{"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": []string{"nosuid", "noexec", "nodev", "ro"}},
		{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": []string{"nosuid", "nodev", "mode=1777", "size=65536k"}},
		{"destination": "/var/lib/cloister", "type": "bind", "source": data, "options": []string{"rbind", "rw"}},
	}
	mounts = append(mounts, s.mounts...)
	return map[string]any{
		"ociVersion": "1.0.2",
		"process": map[string]any{
			"terminal": false,
			"user":     map[string]any{"uid": s.uid, "gid": s.uid},
			"args":     s.args,
			"env":      []string{"PATH=/usr/local/bin:/usr/bin:/bin", "CLOISTER_DATA=/var/lib/cloister", "HOME=/var/lib/cloister"},
			"cwd":      "/var/lib/cloister",
			"capabilities": map[string]any{
				"bounding": caps, "effective": caps, "permitted": caps, "inheritable": []string{}, "ambient": []string{},
			},
			"noNewPrivileges": s.noNewPrivs,
		},
		"root":     map[string]any{"path": rootfs, "readonly": true},
		"hostname": "cloister",
		"mounts":   mounts,
		"linux": map[string]any{
			"namespaces":    ns,
			"maskedPaths":   []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"},
			"readonlyPaths": []string{"/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

// runContainer runs spec under runc to completion (bounded by timeout) and
// returns its combined output and exit status.
func runContainer(t *testing.T, runc, rootfs, data string, s runSpec, timeout time.Duration) (string, int) {
	t.Helper()
	dir := t.TempDir()
	b, err := json.MarshalIndent(s.config(rootfs, data), "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	id := containerID()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, runc, "--root", filepath.Join(dir, "state"), "run", "--bundle", dir, id)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second
	err = cmd.Run()
	exec.Command(runc, "--root", filepath.Join(dir, "state"), "delete", "--force", id).Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("runc run: %v\n%s", err, out.String())
	}
	return out.String(), code
}

// container is a long-running container started by startContainer.
type container struct {
	runc, state, id string
	exited          chan error // receives runc run's end once (put back by who reads it)
	out             *lockedOutput
}

// lockedOutput collects a container's output while it runs.
type lockedOutput struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedOutput) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedOutput) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startContainer runs s in the background; stop ends it (SIGTERM, then
// SIGKILL after 20 s) and returns runc's exit error.
func startContainer(t *testing.T, runc, rootfs, data string, s runSpec) *container {
	t.Helper()
	dir := t.TempDir()
	b, _ := json.Marshal(s.config(rootfs, data))
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	c := &container{runc: runc, state: filepath.Join(dir, "state"), id: containerID(), exited: make(chan error, 1), out: &lockedOutput{}}
	cmd := exec.Command(runc, "--root", c.state, "run", "--bundle", dir, c.id)
	cmd.Stdout, cmd.Stderr = c.out, c.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.exited <- cmd.Wait() }()
	return c
}

func (c *container) stop(t *testing.T) error {
	exec.Command(c.runc, "--root", c.state, "kill", c.id, "TERM").Run()
	var err error
	select {
	case err = <-c.exited:
	case <-time.After(20 * time.Second):
		t.Errorf("container %s did not stop within 20 s of SIGTERM", c.id)
		exec.Command(c.runc, "--root", c.state, "kill", c.id, "KILL").Run()
		err = <-c.exited
	}
	c.exited <- err // for a second stop
	exec.Command(c.runc, "--root", c.state, "delete", "--force", c.id).Run()
	return err
}

func containerID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "cloister-test-" + hex.EncodeToString(b)
}

// dataDir is a writable directory for the container's /var/lib/cloister,
// owned by uid.
func dataDir(t *testing.T, uid int) string {
	t.Helper()
	d := t.TempDir()
	if err := os.Chown(d, uid, uid); err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parents are 0700 root: let the container's user in.
	for p := d; p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	return d
}

type runReport struct {
	Outcome     string            `json:"outcome"`
	Protections []string          `json:"protections"`
	Missing     map[string]string `json:"missing_protections"`
}

// jailedRun runs 'cloister run' of the psi-sum example inside a container
// and returns the worker's run report.
func jailedRun(t *testing.T, runc, rootfs string, uid int, caps []string, noNewPrivs bool) (runReport, string) {
	t.Helper()
	data := dataDir(t, uid)
	out, code := runContainer(t, runc, rootfs, data, psiSum(t, uid, caps, noNewPrivs), 3*time.Minute)
	if code != 0 {
		t.Fatalf("cloister run in the container: exit %d\n%s", code, out)
	}
	res, err := os.ReadFile(filepath.Join(data, "out", "result.json"))
	if err != nil || !strings.Contains(string(res), `"sum": 13050`) && !strings.Contains(string(res), `"sum":13050`) {
		t.Fatalf("result %q (%v)\n%s", res, err, out)
	}
	var rep runReport
	b, err := os.ReadFile(filepath.Join(data, "report.json"))
	if err != nil || json.Unmarshal(b, &rep) != nil {
		t.Fatalf("report: %v %s", err, b)
	}
	return rep, out
}

// psiSum is 'cloister run' of the psi-sum example as a container.
func psiSum(t *testing.T, uid int, caps []string, noNewPrivs bool) runSpec {
	examples := filepath.Join(repoRoot(t), "examples", "psi-sum")
	return runSpec{
		uid: uid, caps: caps, noNewPrivs: noNewPrivs,
		args: []string{"/usr/local/bin/cloister", "run",
			"--input", "customers.csv=/examples/testdata/input/customers.csv",
			"--input", "purchases.csv=/examples/testdata/input/purchases.csv",
			"--output-dir", "/var/lib/cloister/out", "--report", "/var/lib/cloister/report.json",
			"/examples/psi-sum.wasm"},
		mounts: []map[string]any{{"destination": "/examples", "type": "bind", "source": examples, "options": []string{"rbind", "ro"}}},
	}
}

// nodeCaps are the capabilities the chart's root jail grants the node.
var nodeCaps = []string{"CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_KILL"}

// TestJailInContainer runs a program in the jailed worker inside a
// container set up as the chart's node: the rootless jail (uid 65532, no
// capabilities, no_new_privs) and the root jail (uid 0 with the five
// capabilities), and then the root jail with each capability taken away,
// logging which protections each setting keeps. docs/deploy.md's table is
// this test's output.
func TestJailInContainer(t *testing.T) {
	runc := needRunc(t)
	rootfs := unpackedRootfs(t)
	core := []string{"emptyroot", "ipcns", "mountns", "netns", "no_new_privs", "nocaps", "pidns", "rlimit", "seccomp", "utsns", "worker"}

	t.Run("rootless", func(t *testing.T) {
		rep, _ := jailedRun(t, runc, rootfs, UID, nil, true)
		t.Logf("protections %v; missing %v", rep.Protections, rep.Missing)
		for _, p := range append(slices.DeleteFunc(slices.Clone(core), func(s string) bool { return s == "nocaps" }), "userns") {
			if !slices.Contains(rep.Protections, p) {
				t.Errorf("rootless jail: %s not in force (%s)", p, rep.Missing[p])
			}
		}
		// A non-root node cannot map a second uid into the worker's user
		// namespace: the worker keeps capabilities inside its own
		// namespaces, and the report says so.
		if rep.Missing["nocaps"] == "" {
			t.Errorf("rootless jail: nocaps neither in force nor explained")
		}
	})
	t.Run("root", func(t *testing.T) {
		rep, _ := jailedRun(t, runc, rootfs, 0, nodeCaps, false)
		t.Logf("protections %v; missing %v", rep.Protections, keysOf(rep.Missing))
		for _, p := range append(slices.Clone(core), "setupcaps") {
			if !slices.Contains(rep.Protections, p) {
				t.Errorf("root jail: %s not in force (%s)", p, rep.Missing[p])
			}
		}
	})
	for _, drop := range nodeCaps {
		t.Run("root-without-"+drop, func(t *testing.T) {
			var caps []string
			for _, c := range nodeCaps {
				if c != drop {
					caps = append(caps, c)
				}
			}
			if drop == "CAP_SETGID" {
				// The worker's group is set before exec: without
				// CAP_SETGID no worker starts at all.
				out, code := runContainer(t, runc, rootfs, dataDir(t, 0), psiSum(t, 0, caps, false), 3*time.Minute)
				if code == 0 || !strings.Contains(out, "operation not permitted") {
					t.Errorf("without CAP_SETGID: exit %d\n%s", code, out)
				}
				t.Logf("without %s: no worker starts: %s", drop, strings.TrimSpace(out))
				return
			}
			rep, out := jailedRun(t, runc, rootfs, 0, caps, false)
			var lost []string
			for _, p := range append(slices.Clone(core), "setupcaps") {
				if !slices.Contains(rep.Protections, p) {
					lost = append(lost, p)
				}
			}
			t.Logf("without %s: lost %v; missing: %v", drop, lost, rep.Missing)
			if drop == "CAP_SYS_ADMIN" && len(lost) == 0 {
				t.Errorf("without CAP_SYS_ADMIN every namespace still in force?\n%s", out)
			}
		})
	}
}

func keysOf(m map[string]string) []string {
	var k []string
	for s := range m {
		k = append(k, s)
	}
	slices.Sort(k)
	return k
}

// TestValidatorInContainer: a one-organisation consortium's validator runs
// from the image (uid 65532, no capabilities, read-only root, as the
// chart's validator pod) and its ledger API answers with committed blocks.
func TestValidatorInContainer(t *testing.T) {
	runc := needRunc(t)
	rootfs := unpackedRootfs(t)
	cloister := filepath.Join(rootfs, "usr/local/bin/cloister")
	work := t.TempDir()
	run := func(args ...string) string {
		out, err := exec.Command(cloister, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("cloister %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	addrs, err := loopback.Addrs(2)
	if err != nil {
		t.Fatal(err)
	}
	p2p, api := addrs[0], addrs[1]
	run("consortium", "keygen", "--org", "org1", "--p2p-address", p2p, "--out", filepath.Join(work, "org1"))
	run("consortium", "init", "--orgs", "1", "--out", filepath.Join(work, "c"), "--member", filepath.Join(work, "org1", "org1.member.json"))
	data := dataDir(t, UID)
	// The keys and genesis reach the container as the chart's Secret and
	// ConfigMap do: read-only mounts; the init step runs in a container too.
	mounts := []map[string]any{
		{"destination": "/keys", "type": "bind", "source": filepath.Join(work, "org1", "keys"), "options": []string{"rbind", "ro"}},
		{"destination": "/genesis", "type": "bind", "source": filepath.Join(work, "c"), "options": []string{"rbind", "ro"}},
	}
	for _, f := range []string{"node_key.json", "priv_validator_key.json"} {
		os.Chown(filepath.Join(work, "org1", "keys", f), UID, UID)
	}
	os.Chmod(filepath.Join(work, "org1", "keys"), 0o755)
	os.Chmod(filepath.Join(work, "org1"), 0o755)
	os.Chmod(work, 0o755)
	home := runSpec{uid: UID, noNewPrivs: true, hostNetwork: true, mounts: mounts, args: []string{
		"/usr/local/bin/cloister", "consortium", "validator-home", "--home=/var/lib/cloister/validator", "--keys=/keys",
		"--genesis=/genesis/genesis.json", "--p2p-listen=" + p2p, "--api-listen=" + api, "--validators=1"}}
	if out, code := runContainer(t, runc, rootfs, data, home, time.Minute); code != 0 {
		t.Fatalf("validator-home in the container: exit %d\n%s", code, out)
	}

	spec := runSpec{uid: UID, noNewPrivs: true, hostNetwork: true,
		args: []string{"/usr/local/bin/cloister", "ledger", "start", "--home=/var/lib/cloister/validator"}}
	c := startContainer(t, runc, rootfs, data, spec)
	defer c.stop(t)
	exited, out := c.exited, c.out
	deadline := time.Now().Add(90 * time.Second)
	var last string
	for {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("validator container exited: %v\n%s", err, out.String())
		default:
		}
		resp, err := http.Get("http://" + api + "/v1/status")
		if err == nil {
			var st struct {
				ChainID string `json:"chain_id"`
				Height  int64  `json:"height"`
			}
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			last = fmt.Sprintf("%s height %d", st.ChainID, st.Height)
			if st.Height >= 2 && st.ChainID == "cloister-consortium" {
				// The chart's readiness probe.
				r, err := http.Get("http://" + api + "/readyz")
				if err != nil {
					t.Fatal(err)
				}
				r.Body.Close()
				if r.StatusCode != http.StatusOK {
					t.Fatalf("validator in the container: /readyz answers %s at %s", r.Status, last)
				}
				t.Logf("validator in the container answers and is ready: %s", last)
				return
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("validator API never answered with blocks: %s\n%s", last, out.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// TestNodeInContainer: a node runs from the image as the chart's node pod
// with the root jail (uid 0, exactly the five capabilities, read-only
// root) and its embedded ledger; the chart's probes answer (/healthz,
// then /readyz once the attester and the ledger work), its status says
// so, and SIGTERM stops it cleanly within the pod's grace.
func TestNodeInContainer(t *testing.T) {
	runc := needRunc(t)
	rootfs := unpackedRootfs(t)
	addrs, err := loopback.Addrs(1)
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + addrs[0]
	spec := runSpec{uid: 0, caps: nodeCaps, hostNetwork: true, args: []string{"/usr/local/bin/cloister", "node",
		"--listen=" + addrs[0], "--data=/var/lib/cloister/node", "--log-format=json", "--shutdown-grace=10s", "--warm-workers=1"}}
	c := startContainer(t, runc, rootfs, dataDir(t, 0), spec)
	defer c.stop(t)
	// The kubelet probes without verifying the certificate, as here.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	get := func(path string) (int, string) {
		res, err := hc.Get(url + path)
		if err != nil {
			return 0, err.Error()
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
		return res.StatusCode, string(b)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		select {
		case err := <-c.exited:
			c.exited <- err
			t.Fatalf("node container exited: %v\n%s", err, c.out.String())
		default:
		}
		code, body := get("/readyz")
		if code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz never answered 200: %d %s\n%s", code, body, c.out.String())
		}
		time.Sleep(250 * time.Millisecond)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d", code)
	}
	code, body := get("/v1/node/status")
	var st struct {
		Ready        bool   `json:"ready"`
		IsolateClass string `json:"isolate_class"`
		Ledger       struct {
			Mode string `json:"mode"`
		} `json:"ledger"`
		Workers struct {
			Binary string `json:"binary"`
		} `json:"workers"`
	}
	if err := json.Unmarshal([]byte(body), &st); code != http.StatusOK || err != nil || !st.Ready || st.IsolateClass != "software" ||
		st.Ledger.Mode != "embedded" || st.Workers.Binary != "/usr/local/bin/cloister-isolate" {
		t.Fatalf("status: %d %v %s", code, err, body)
	}
	t.Logf("node in the container is ready: %s", strings.TrimSpace(body))
	if err := c.stop(t); err != nil {
		t.Fatalf("the node did not stop cleanly at SIGTERM: %v\n%s", err, c.out.String())
	}
	if out := c.out.String(); !strings.Contains(out, `"msg":"stopping: no run in progress"`) {
		t.Fatalf("no clean drain in the JSON log:\n%s", out)
	}
}

// wasmLoop is `loop br 0 end` as _start: a guest that never returns (the
// module isolate's tests call wasmLoop).
var wasmLoop, _ = hex.DecodeString("0061736d01000000010401600000030201000503010001071302065f73746172740000066d656d6f727902000a0901070003400c000b0b")

// TestDeadlineInContainer: at the deadline the node kills its worker,
// which runs under a uid of its own; that signal is what CAP_KILL is for.
// Without it the kill is refused and only the worker's CPU-time rlimit
// (compile time + timeout + 1 s) ends the guest; the report says so.
func TestDeadlineInContainer(t *testing.T) {
	runc := needRunc(t)
	rootfs := unpackedRootfs(t)
	for _, tc := range []struct {
		name string
		caps []string
	}{{"root", nodeCaps}, {"root-without-CAP_KILL", slices.DeleteFunc(slices.Clone(nodeCaps), func(c string) bool { return c == "CAP_KILL" })}} {
		t.Run(tc.name, func(t *testing.T) {
			data := dataDir(t, 0)
			if err := os.WriteFile(filepath.Join(data, "loop.wasm"), wasmLoop, 0o644); err != nil {
				t.Fatal(err)
			}
			s := runSpec{uid: 0, caps: tc.caps, args: []string{"/usr/local/bin/cloister", "run", "--timeout", "2s",
				"--report", "/var/lib/cloister/report.json", "/var/lib/cloister/loop.wasm"}}
			start := time.Now()
			out, code := runContainer(t, runc, rootfs, data, s, 3*time.Minute)
			took := time.Since(start)
			rep, _ := os.ReadFile(filepath.Join(data, "report.json"))
			t.Logf("exit %d after %s; report %s; output %s", code, took.Round(time.Millisecond), bytes.TrimSpace(rep), strings.TrimSpace(out))
			if code != 124 {
				t.Errorf("exit %d, want 124 (timeout)", code)
			}
			withKill := tc.caps != nil && len(tc.caps) == len(nodeCaps)
			if withKill && took > 30*time.Second {
				t.Errorf("with CAP_KILL the deadline took %s", took)
			}
			// The report says what happened: killed, or the kill refused.
			want := "the worker was killed"
			if !withKill {
				want = "killing the worker was refused"
			}
			if !bytes.Contains(rep, []byte(want)) {
				t.Errorf("report %s does not say %q", rep, want)
			}
		})
	}
}
