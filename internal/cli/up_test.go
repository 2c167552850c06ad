package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/loopback"
	"github.com/cloisterhq/cloister/keys"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

// The tests of 'up' and 'down' run this test binary as the cloister
// command line (TestMain, CLOISTER_TEST_CLI), each component a process of
// its own, as a user would.

// upAddr picks a loopback address for a component told its port now.
func upAddr(t *testing.T) string {
	t.Helper()
	l, err := loopback.Listen()
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// cliProcess is the command line as a process of its own.
func cliProcess(t *testing.T, ctx context.Context, args ...string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := exec.CommandContext(ctx, self, args...)
	c.Env = append(os.Environ(), "CLOISTER_TEST_CLI=1", "XDG_CONFIG_HOME="+filepath.Join(t.TempDir(), "config"))
	c.WaitDelay = 5 * time.Second
	return c
}

// runCLIProcess runs the command line as a process, bounded in time.
func runCLIProcess(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := cliProcess(t, ctx, args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	err := c.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("cloister %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

func readRunning(t *testing.T, dir string) upRunning {
	t.Helper()
	var r upRunning
	b, err := os.ReadFile(filepath.Join(dir, upRunningFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

// waitGone waits until none of pids runs.
func waitGone(t *testing.T, pids []int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d still runs", pid)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// TestUpForegroundCtrlC: 'up' prints the URLs, the platform key and the
// next commands; Ctrl-C stops every component and leaves the directory
// with its state only; 'up' again resumes it with the same key.
func TestUpForegroundCtrlC(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net")
	node, led := upAddr(t), upAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	up := cliProcess(t, ctx, "up", "--dir", dir, "--listen", node, "--ledger-listen", led)
	stdout, err := up.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	up.Stderr = &stderr
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	var summary strings.Builder
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		summary.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "stop it with") {
			break
		}
	}
	k, err := keys.Load(filepath.Join(dir, "node", "platform.key"))
	if err != nil {
		t.Fatalf("%v\nstdout:\n%s\nstderr:\n%s", err, summary.String(), stderr.String())
	}
	for _, want := range []string{
		"node          https://" + node,
		"platform key  " + k.Public().SigningString(),
		"ledger        http://" + led + "    cloister.ledger/cloister-embedded-",
		"policy new --out alice.json --node-data " + dir,
		"session create --node https://" + node,
		"ledger verify --ledger http://" + led,
		"stop it with Ctrl-C, or 'cloister down --dir " + dir + "' from another terminal",
	} {
		if !strings.Contains(summary.String(), want) {
			t.Errorf("summary lacks %q:\n%s", want, summary.String())
		}
	}
	r := readRunning(t, dir)
	var pids []int
	for _, c := range r.Components {
		if !c.Running || !alive(c.PID) {
			t.Errorf("component %+v not running", c)
		}
		pids = append(pids, c.PID)
	}
	// The ledger the summary names answers.
	lc, _ := lclient.New("http://" + led)
	if st, err := lc.Status(ctx); err != nil || "cloister.ledger/"+st.ChainID != r.Origin {
		t.Errorf("ledger status %+v, %v; summary origin %s", st, err, r.Origin)
	}

	up.Process.Signal(os.Interrupt)
	go io.Copy(io.Discard, stdout)
	if err := up.Wait(); err != nil {
		t.Fatalf("up after Ctrl-C: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "stopped. The state is kept in "+dir) {
		t.Errorf("stderr:\n%s", stderr.String())
	}
	waitGone(t, pids)
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "logs node up.json" {
		t.Errorf("after Ctrl-C %s holds %v, want logs node up.json", dir, names)
	}

	// Again, in the background: the same node (key) and ledger.
	code, out, errOut := runCLIProcess(t, "up", "--detach", "--dir", dir)
	if code != 0 || !strings.Contains(out, "platform key  "+k.Public().SigningString()) || !strings.Contains(out, r.Origin) {
		t.Fatalf("up --detach: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "stop it with 'cloister down --dir "+dir+"'") {
		t.Errorf("detached summary:\n%s", out)
	}
	// Other addresses for an existing network are refused.
	if code, _, errOut := runCLIProcess(t, "up", "--dir", dir, "--listen", upAddr(t)); code != 2 || !strings.Contains(errOut, "holds a network made with --listen "+node) {
		t.Errorf("up with another --listen: exit %d %q", code, errOut)
	}
	code, _, errOut = runCLIProcess(t, "down", "--dir", dir, "--purge")
	if code != 0 || !strings.Contains(errOut, "removed "+dir) {
		t.Errorf("down --purge: exit %d %q", code, errOut)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after down --purge", dir)
	}
	if code, _, errOut := runCLIProcess(t, "down", "--dir", dir); code != 0 || !strings.Contains(errOut, "nothing to stop") {
		t.Errorf("down of nothing: exit %d %q", code, errOut)
	}
}

// TestUpTestnet: with --validators 4, stopping two validators halts the
// ledger (an append says too few validators are up), 'up' starts them
// again and the ledger goes on; the node records through it all along.
func TestUpTestnet(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four validators and a node as processes")
	}
	dir := filepath.Join(t.TempDir(), "net")
	node, led := upAddr(t), upAddr(t)
	code, out, errOut := runCLIProcess(t, "up", "--detach", "--dir", dir, "--validators", "4", "--listen", node, "--ledger-listen", led)
	if code != 0 {
		t.Fatalf("up --validators 4: exit %d\n%s%s", code, out, errOut)
	}
	t.Cleanup(func() { runCLIProcess(t, "down", "--dir", dir) })
	if !strings.Contains(out, "(4 validators; the node records through v0)") || !strings.Contains(out, "v3") {
		t.Errorf("summary:\n%s", out)
	}
	mustCLI(t, "key", "new", "--out", filepath.Join(dir, "..", "alice.key"))
	key := filepath.Join(dir, "..", "alice.key")
	v0 := "http://" + led
	mustCLI(t, "ledger", "append", "--ledger", v0, "--key", key, "--body", `{"n":1}`)

	code, _, errOut = runCLIProcess(t, "down", "--dir", dir, "v3", "v2")
	if code != 0 || !strings.Contains(errOut, "stopped v3, v2") {
		t.Fatalf("down v3 v2: exit %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "ledger", "append", "--ledger", v0, "--key", key, "--body", `{"n":2}`, "--wait", "8s")
	if code != 1 || !strings.Contains(errOut, "too few of its validators are up") || !strings.Contains(errOut, "it needs 3 of its 4 validators") {
		t.Errorf("append without quorum: exit %d %q", code, errOut)
	}
	code, out, errOut = runCLIProcess(t, "up", "--dir", dir)
	if code != 0 || strings.Contains(out, "not running") {
		t.Fatalf("up again: exit %d\n%s%s", code, out, errOut)
	}
	mustCLI(t, "ledger", "append", "--ledger", v0, "--key", key, "--body", `{"n":3}`)
	code, _, errOut = runCLIProcess(t, "down", "--dir", dir, "nosuch")
	if code != 1 || !strings.Contains(errOut, `no component "nosuch" here; the components are node, v0, v1, v2, v3`) {
		t.Errorf("down nosuch: exit %d %q", code, errOut)
	}
	r := readRunning(t, dir)
	var pids []int
	for _, c := range r.Components {
		pids = append(pids, c.PID)
	}
	if code, _, errOut := runCLIProcess(t, "down", "--dir", dir); code != 0 || !strings.Contains(errOut, "stopped the network of "+dir) {
		t.Fatalf("down: exit %d %q", code, errOut)
	}
	waitGone(t, pids)
	if _, err := os.Stat(filepath.Join(dir, upSocketFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("control socket left behind: %v", err)
	}
}

// TestUpPortInUse: a port in use is refused before anything is created.
func TestUpPortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := filepath.Join(t.TempDir(), "net")
	code, _, errOut := runCLIProcess(t, "up", "--dir", dir, "--listen", l.Addr().String(), "--ledger-listen", upAddr(t))
	if code != 1 || !strings.Contains(errOut, l.Addr().String()+" is in use") {
		t.Errorf("exit %d %q", code, errOut)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 || entries[0].Name() != "logs" {
		t.Errorf("%s holds %v after a refused start", dir, entries)
	}
	// A directory 'up' did not make is left alone.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "precious"), []byte("x"), 0o600)
	if code, _, errOut := runCLIProcess(t, "down", "--dir", other, "--purge"); code != 1 || !strings.Contains(errOut, "was not made by 'cloister up'") {
		t.Errorf("down --purge of a foreign directory: exit %d %q", code, errOut)
	}
	if code, _, errOut := runCLIProcess(t, "up", "--dir", other); code != 2 || !strings.Contains(errOut, "is not empty and was not made by 'cloister up'") {
		t.Errorf("up in a foreign directory: exit %d %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(other, "precious")); err != nil {
		t.Error(err)
	}
}

// TestUpRunningRemovedForGood: once the supervisor has stopped everything
// and removed running.json, a component's exit watcher running late (it
// writes running.json when its process ends) does not put it back.
func TestUpRunningRemovedForGood(t *testing.T) {
	dir := t.TempDir()
	sv := newSupervisor(dir, &upConfig{Version: 1, Listen: "127.0.0.1:1", LedgerListen: "127.0.0.1:2", IsolateClass: "software"}, "cloister", io.Discard)
	path := filepath.Join(dir, upRunningFile)
	sv.writeRunning()
	if _, err := os.Stat(path); err != nil {
		t.Fatal(err)
	}
	sv.removeRunning()
	sv.writeRunning() // the late watcher
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("running.json after the supervisor removed it: %v", err)
	}
}
