package ledgerbench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
)

// validatorHomeEnv, when set, makes the test binary run one validator of
// that home instead of the benchmarks (see startValidatorProcess).
const validatorHomeEnv = "CLOISTER_BENCH_LEDGER_VALIDATOR_HOME"

// validatorProfileEnv, when set in the benchmark's environment, makes each
// validator process write a CPU profile of its whole run to
// <value>-<pid>.prof (go tool pprof merges several): -cpuprofile covers
// the benchmark process only.
const validatorProfileEnv = "CLOISTER_BENCH_LEDGER_VALIDATOR_CPUPROFILE"

// testnet is n validators on loopback: in this process (Append callable
// directly, and a CPU profile of the benchmark covers them), or each in its
// own process (the way `cloister ledger start` runs them).
type testnet struct {
	clients []*client.Client
	inproc  []*ledger.Validator // nil for processes
	pids    []int               // validator processes
	closers []func() error
}

// cpu is the CPU time used so far by this process and the validator
// processes.
func (t *testnet) cpu() time.Duration {
	d := cpuTime()
	for _, pid := range t.pids {
		d += processCPU(pid)
	}
	return d
}

// processCPU reads a running process's user + system time from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks of 1/100 s).
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces; count from after it.
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s)
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// close stops every validator at once, after letting the chain settle.
// Stopping them one by one leaves the last ones without a quorum and
// peers catching up, the state in which CometBFT v1.0.1's consensus
// reactor can read a block store its node has already closed and panic
// ("pebble: closed" in queryMaj23Routine); an idle chain with every
// validator at the same height avoids it.
func (t *testnet) close() error {
	if len(t.closers) == 0 {
		return nil
	}
	t.settle()
	errs := make([]error, len(t.closers))
	var wg sync.WaitGroup
	for i, c := range t.closers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c()
		}()
	}
	wg.Wait()
	t.closers = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing the testnet: %w", err)
	}
	return nil
}

// settle waits (at most 30 s) until every validator has committed the same
// log and the chain has made one more empty block.
func (t *testnet) settle() {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		var sizes, heights []int64
		for _, c := range t.clients {
			st, err := c.Status(context.Background())
			if err != nil {
				return
			}
			sizes = append(sizes, int64(st.Size))
			heights = append(heights, st.Height)
		}
		if slices.Min(sizes) == slices.Max(sizes) && slices.Max(heights)-slices.Min(heights) <= 1 {
			time.Sleep(time.Second)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (t *testnet) appenders() []ledger.Appender {
	out := make([]ledger.Appender, len(t.inproc))
	for i, v := range t.inproc {
		out[i] = v
	}
	return out
}

// startTestnet generates n validator homes under dir and starts them.
// The caller closes the testnet; tb's cleanup does too.
func startTestnet(tb testing.TB, dir string, n int, processes bool) *testnet {
	homes, err := ledger.GenerateTestnet(dir, n, ledger.TestnetOptions{ChainID: "bench-testnet"})
	if err != nil {
		tb.Fatal(err)
	}
	t := &testnet{}
	tb.Cleanup(func() {
		if err := t.close(); err != nil {
			tb.Log(err)
		}
	})
	for _, h := range homes {
		if processes {
			url, pid, stop, err := startValidatorProcess(h.Home)
			if err != nil {
				t.close()
				tb.Fatal(err)
			}
			t.pids = append(t.pids, pid)
			t.closers = append(t.closers, stop)
			t.clients = append(t.clients, newClient(tb, url))
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		v, err := ledger.StartValidator(ctx, h.Home, ledger.StartOptions{})
		cancel()
		if err != nil {
			t.close()
			tb.Fatal(err)
		}
		t.closers = append(t.closers, v.Close)
		t.inproc = append(t.inproc, v)
		t.clients = append(t.clients, newClient(tb, v.APIURL()))
	}
	for _, c := range t.clients {
		waitCheckpoint(tb, c, 0)
	}
	return t
}

// startValidatorProcess runs the validator of home in a child process (this
// test binary, see TestMain) and returns its API URL and how to stop it.
func startValidatorProcess(home string) (url string, pid int, stop func() error, err error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), validatorHomeEnv+"="+home)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", 0, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	done := make(chan error, 1)
	stop = func() error {
		stdin.Close() // the child closes its validator and exits
		select {
		case err := <-done:
			return err
		case <-time.After(15 * time.Second):
			cmd.Process.Kill()
			return fmt.Errorf("validator process %d (%s) did not stop within 15 s; killed", cmd.Process.Pid, home)
		}
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- u
			}
		}
		done <- cmd.Wait()
	}()
	select {
	case url = <-ready:
		return url, cmd.Process.Pid, stop, nil
	case err := <-done:
		done <- err
		return "", 0, nil, fmt.Errorf("validator process for %s exited before it was ready: %v", home, err)
	case <-time.After(time.Minute):
		stop()
		return "", 0, nil, fmt.Errorf("validator process for %s not ready within a minute", home)
	}
}

// validatorProcessMain is the child's side: start the validator, say
// "ready <url>", run until stdin closes or a signal comes.
func validatorProcessMain(home string) int {
	if prefix := os.Getenv(validatorProfileEnv); prefix != "" {
		f, err := os.Create(fmt.Sprintf("%s-%d.prof", prefix, os.Getpid()))
		if err != nil {
			fmt.Fprintln(os.Stderr, "validator:", err)
			return 1
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "validator:", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	v, err := ledger.StartValidator(ctx, home, ledger.StartOptions{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "validator:", err)
		return 1
	}
	fmt.Printf("ready %s\n", v.APIURL())
	stopped := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stopped)
	}()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-stopped:
	case <-sig:
	}
	if err := v.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "validator close:", err)
		return 1
	}
	return 0
}
