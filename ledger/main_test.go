package ledger

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// The fault tests run validators (and a crashing writer) as separate
// processes: this test binary, re-executed with one of these variables
// set, plays the part instead of running tests.
const (
	envChildValidator = "CLOISTER_LEDGER_TEST_VALIDATOR"  // home to run
	envChildWriter    = "CLOISTER_LEDGER_TEST_WRITER"     // embedded dir to append to until killed
	envChildWriterPad = "CLOISTER_LEDGER_TEST_WRITER_PAD" // bytes of padding in each of the writer's notes
	envChildOptions   = "CLOISTER_LEDGER_TEST_OPTIONS"    // the validator's childOptions, JSON
)

// childOptions are the StartOptions a validator child runs with.
type childOptions struct {
	RetainBlocks     int64      `json:"retain_blocks,omitempty"`
	SnapshotInterval int64      `json:"snapshot_interval,omitempty"`
	StateSync        *StateSync `json:"state_sync,omitempty"`
}

func TestMain(m *testing.M) {
	if home := os.Getenv(envChildValidator); home != "" {
		os.Exit(runChildValidator(home))
	}
	if dir := os.Getenv(envChildWriter); dir != "" {
		os.Exit(runChildWriter(dir))
	}
	os.Exit(m.Run())
}

func childLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))
}

// runChildValidator starts a validator, says "ready <url>" and runs until
// SIGTERM (orderly stop) or SIGKILL.
func runChildValidator(home string) int {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	var co childOptions
	if o := os.Getenv(envChildOptions); o != "" {
		if err := json.Unmarshal([]byte(o), &co); err != nil {
			fmt.Fprintln(os.Stderr, "options:", err)
			return 2
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	v, err := StartValidator(ctx, home, StartOptions{Logger: childLogger(), RetainBlocks: co.RetainBlocks,
		SnapshotInterval: co.SnapshotInterval, StateSync: co.StateSync})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "start:", err)
		return 1
	}
	fmt.Println("ready", v.APIURL())
	<-sig
	if err := v.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		return 1
	}
	return 0
}

// runChildWriter appends notes from 16 goroutines and prints
// "<index> <leaf hash hex>" for every receipt, until killed.
func runChildWriter(dir string) int {
	e, err := OpenEmbedded(context.Background(), dir, EmbeddedOptions{Logger: childLogger()})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 1
	}
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		panic(err)
	}
	pad, _ := strconv.Atoi(os.Getenv(envChildWriterPad))
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				body := map[string]any{"g": g, "i": i}
				if pad > 0 {
					body["pad"] = strings.Repeat("x", pad)
				}
				se, err := verify.NewEntryWithNonce(key, KindNote, body, uint64(g)<<32|uint64(i), time.Now())
				if err != nil {
					panic(err)
				}
				rc, err := e.Append(context.Background(), se)
				if err != nil {
					fmt.Fprintln(os.Stderr, "append:", err)
					continue
				}
				mu.Lock()
				fmt.Fprintf(out, "%d %s\n", rc.Index, hex.EncodeToString(rc.LeafHash[:]))
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return 0
}

// child is a test-binary child process.
type child struct {
	t      testing.TB
	cmd    *exec.Cmd
	lines  chan string
	done   chan struct{}
	errLog string
}

func startChild(t testing.TB, env, value, name string, extraEnv ...string) *child {
	t.Helper()
	errLog := filepath.Join(t.TempDir(), name+".stderr")
	ef, err := os.Create(errLog)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), env+"="+value), extraEnv...)
	cmd.Stderr = ef
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ef.Close()
	c := &child{t: t, cmd: cmd, lines: make(chan string, 1<<16), done: make(chan struct{}), errLog: errLog}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case c.lines <- sc.Text():
			default:
			}
		}
		close(c.lines)
	}()
	go func() {
		cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.kill()
		if t.Failed() {
			b, _ := os.ReadFile(errLog)
			t.Logf("%s stderr:\n%s", name, b)
		}
	})
	return c
}

// waitLine returns the next stdout line starting with prefix.
func (c *child) waitLine(prefix string, timeout time.Duration) string {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				b, _ := os.ReadFile(c.errLog)
				c.t.Fatalf("child exited before printing %q:\n%s", prefix, b)
			}
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-deadline:
			c.t.Fatalf("child did not print %q within %s", prefix, timeout)
		}
	}
}

func (c *child) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Kill()
	<-c.done
}

// stop asks for an orderly stop and checks the child exited cleanly.
func (c *child) stop() {
	c.t.Helper()
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.t.Fatal("child did not stop within 30s of SIGTERM")
	}
	if code := c.cmd.ProcessState.ExitCode(); code != 0 {
		b, _ := os.ReadFile(c.errLog)
		c.t.Fatalf("child exited with %d:\n%s", code, b)
	}
}
