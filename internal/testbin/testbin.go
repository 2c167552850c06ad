// Package testbin builds the cloister command for tests and benchmarks
// that run a node as a process of its own (crash tests, the soak
// benchmark): without the race detector, once per process, with the lean
// worker binary cloister-isolate beside it so that the node starts its
// jailed workers the way an installed one does.
package testbin

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

var (
	once     sync.Once
	dir      string
	path     string
	buildErr error
)

// Cloister builds cmd/cloister and cmd/cloister-isolate into a temporary
// directory (once per process) and returns the path of cloister. Call
// Cleanup when the process is done with it.
func Cloister() (string, error) {
	once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		if dir, err = os.MkdirTemp("", "cloister-bin-"); err != nil {
			buildErr = err
			return
		}
		for _, b := range []struct {
			pkg, name string
			env       []string
		}{
			{"github.com/cloisterhq/cloister/cmd/cloister", "cloister", nil},
			// As the node's help says to build it: without cgo.
			{"github.com/cloisterhq/cloister/cmd/cloister-isolate", "cloister-isolate", []string{"CGO_ENABLED=0"}},
		} {
			cmd := exec.Command(goTool, "build", "-o", filepath.Join(dir, b.name), b.pkg)
			cmd.Env = append(os.Environ(), b.env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("building %s: %v\n%s", b.name, err, out)
				return
			}
		}
		path = filepath.Join(dir, "cloister")
	})
	return path, buildErr
}

// Cleanup removes what Cloister built.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}

// Node is a 'cloister node' process started by StartNode, or a validator
// started by StartValidator (URL is then its ledger API's).
type Node struct {
	Cmd       *exec.Cmd
	URL       string // https://127.0.0.1:PORT
	LedgerURL string // with --ledger-listen: the ledger API's URL
	Done      chan struct{}
	log       lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// maxLog bounds the log kept: a node running for minutes logs every step.
const maxLog = 1 << 20

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len()+len(p) > maxLog {
		rest := bytes.Clone(l.b.Bytes()[l.b.Len()/2:])
		l.b.Reset()
		l.b.WriteString("[…]\n")
		l.b.Write(rest)
	}
	return l.b.Write(p)
}

var (
	nodeURLRe   = regexp.MustCompile(`msg="node listening" url=(\S+)`)
	ledgerURLRe = regexp.MustCompile(`msg="ledger API listening" url=(\S+)`)
)

// StartNode runs bin with "node" and args (which should listen on
// 127.0.0.1:0, and log at level info: the URLs are read from the log), and
// waits, at most timeout, until the node serves (and,
// with --ledger-listen, the ledger API too), reading the URLs from its log.
func StartNode(bin string, timeout time.Duration, args ...string) (*Node, error) {
	cmd := exec.Command(bin, append([]string{"node"}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	n := &Node{Cmd: cmd, Done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		cmd.Wait()
		pw.Close()
		close(n.Done)
	}()
	wantLedger := slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--ledger-listen") })
	urls := make(chan [2]string, 1)
	go func() {
		var nu, lu string
		sent := false
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			n.log.Write([]byte(line + "\n"))
			if m := nodeURLRe.FindStringSubmatch(line); m != nil {
				nu = m[1]
			}
			if m := ledgerURLRe.FindStringSubmatch(line); m != nil {
				lu = m[1]
			}
			if nu != "" && (lu != "" || !wantLedger) && !sent {
				urls <- [2]string{nu, lu}
				sent = true
			}
		}
		io.Copy(io.Discard, pr)
	}()
	select {
	case u := <-urls:
		n.URL, n.LedgerURL = u[0], u[1]
		return n, nil
	case <-n.Done:
		return nil, fmt.Errorf("the node exited at start:\n%s", n.Log())
	case <-time.After(timeout):
		n.Kill()
		return nil, fmt.Errorf("the node did not start within %s:\n%s", timeout, n.Log())
	}
}

// StartValidator prepares a one-validator ledger under dir ("cloister
// ledger testnet") and runs it ("cloister ledger start", a process of its
// own), waiting at most timeout until its API reports ready (/readyz).
func StartValidator(bin, dir string, timeout time.Duration) (*Node, error) {
	out, err := exec.Command(bin, "ledger", "testnet", "--validators", "1", "--out", dir).Output()
	if err != nil {
		return nil, fmt.Errorf("cloister ledger testnet: %w", err)
	}
	home, url, ok := strings.Cut(strings.TrimSpace(string(out)), " ")
	if !ok {
		return nil, fmt.Errorf("cloister ledger testnet printed %q, want HOME URL", out)
	}
	cmd := exec.Command(bin, "ledger", "start", "--home", home)
	n := &Node{Cmd: cmd, URL: url, Done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &n.log, &n.log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		cmd.Wait()
		close(n.Done)
	}()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return n, nil
			}
		}
		select {
		case <-n.Done:
			return nil, fmt.Errorf("the validator exited at start:\n%s", n.Log())
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			n.Kill()
			return nil, fmt.Errorf("the validator was not ready within %s:\n%s", timeout, n.Log())
		}
	}
}

// Log is what the node has written to its standard error so far.
func (n *Node) Log() string {
	n.log.mu.Lock()
	defer n.log.mu.Unlock()
	return n.log.b.String()
}

// Kill sends SIGKILL and waits (at most 30 s) for the process to be gone.
func (n *Node) Kill() {
	n.Cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-n.Done:
	case <-time.After(30 * time.Second):
	}
}

// Stop sends SIGTERM and waits (at most 30 s), then kills.
func (n *Node) Stop() {
	n.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.Done:
	case <-time.After(30 * time.Second):
		n.Kill()
	}
}
