package swtpm

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/cloisterhq/cloister/internal/loopback"
)

// ErrNotInstalled is returned when the swtpm binary is not on PATH.
var ErrNotInstalled = errors.New("swtpm is not installed (Debian package swtpm)")

// Server is a running swtpm process.
type Server struct {
	// Spec is the TPM name for tpm.Open: "tcp:127.0.0.1:PORT".
	Spec string
	// Port and CtrlPort are the command and control ports.
	Port, CtrlPort int
	cmd            *exec.Cmd
	stderr         *bytes.Buffer
	done           chan struct{}
}

// Start runs "swtpm socket --tpm2" with its state in stateDir (which must
// exist), listening on two free loopback ports, and waits until it accepts
// connections. The caller must Stop it.
func Start(stateDir string) (*Server, error) {
	bin, err := exec.LookPath("swtpm")
	if err != nil {
		return nil, ErrNotInstalled
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		port, err := freePortPair()
		if err != nil {
			return nil, err
		}
		s := &Server{Port: port, CtrlPort: port + 1, Spec: "tcp:127.0.0.1:" + strconv.Itoa(port), stderr: &bytes.Buffer{}, done: make(chan struct{})}
		s.cmd = exec.Command(bin, "socket", "--tpm2",
			"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.Port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.CtrlPort),
			"--tpmstate", "dir="+stateDir,
			"--flags", "not-need-init,startup-clear")
		s.cmd.Stderr = s.stderr
		s.cmd.Stdout = s.stderr
		if err := s.cmd.Start(); err != nil {
			return nil, fmt.Errorf("swtpm: %w", err)
		}
		go func() { _ = s.cmd.Wait(); close(s.done) }()
		if err := s.waitReady(5 * time.Second); err != nil {
			lastErr = err
			s.Stop()
			continue
		}
		return s, nil
	}
	return nil, lastErr
}

func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-s.done:
			return fmt.Errorf("swtpm exited: %s", s.stderr.String())
		default:
		}
		// Both ports must answer: swtpm opens them one after the other, and
		// a port answering alone may belong to another process that took it
		// between freePortPair and swtpm's bind.
		if s.listening(s.CtrlPort) && s.listening(s.Port) {
			select {
			case <-s.done:
				return fmt.Errorf("swtpm exited: %s", s.stderr.String())
			default:
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("swtpm did not listen within %s: %s", timeout, s.stderr.String())
}

func (s *Server) listening(port int) bool {
	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 200*time.Millisecond)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// Stop kills the swtpm process and waits for it to exit.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(os.Kill)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
	}
}

// freePortPair finds a port p such that p and p+1 are both free now.
func freePortPair() (int, error) {
	for i := 0; i < 20; i++ {
		l, err := loopback.Listen()
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l.Close()
		if err != nil {
			continue
		}
		l2.Close()
		return p, nil
	}
	return 0, errors.New("swtpm: no free pair of loopback ports")
}
