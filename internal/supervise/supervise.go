// Package supervise runs a local network's components, each a process of
// its own, and stops them in order: the supervisor behind 'cloister up'
// (decision 0170) and 'cloister testnet' (decision 0115), and what tests
// embed through package internal/testnet.
//
// A component is a name, a program with its arguments, the addresses it
// binds (checked free before it starts) and a readiness probe. Each child
// runs in a process group of its own, so that Ctrl-C at a terminal reaches
// only the supervisor, which stops the components itself, in order; each
// has the parent-death signal set, so a supervisor that is killed leaves
// no component behind. Stopping is SIGTERM, then SIGKILL to the process
// group after a grace period. Each component's output is appended to
// LogDir/NAME.log.
//
// The package also holds what a supervisor running in the background
// needs: a lock on its directory (flock on the directory itself, so no
// lock file goes stale) and a control socket speaking one JSON request
// and one JSON answer per connection.
package supervise

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Component is one process of a network.
type Component struct {
	Name string
	// Path is the program; empty means the Supervisor's Self.
	Path string
	Args []string
	URL  string
	// Binds are the addresses it listens on, checked free before it
	// starts.
	Binds []string
	// Probe reports whether it is ready; nil: ready once started.
	Probe func(ctx context.Context) error
}

// Proc is a started component.
type Proc struct {
	Spec Component
	Log  string // its log file

	cmd      *exec.Cmd
	exited   chan struct{}
	exitErr  error
	stopping bool // guarded by the Supervisor's mu
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has ended.
func (p *Proc) Done() <-chan struct{} { return p.exited }

// Exited reports whether the process has ended.
func (p *Proc) Exited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// ExitErr is how the process ended (nil: status 0); valid once Exited.
func (p *Proc) ExitErr() error {
	if !p.Exited() {
		return nil
	}
	return p.exitErr
}

// State says whether it runs and, if not, how it ended.
func (p *Proc) State() (running bool, exit string) {
	if !p.Exited() {
		return true, ""
	}
	if p.exitErr != nil {
		return false, p.exitErr.Error()
	}
	return false, "stopped"
}

// Supervisor starts and stops components.
type Supervisor struct {
	// Self is the program of components with no Path (this binary, for
	// 'cloister up').
	Self string
	// LogDir holds each component's log, NAME.log.
	LogDir string
	// Label starts every line the supervisor tells Out ("cloister up").
	Label string
	// Out is where events are told: a component that stopped on its
	// own, one killed after its grace period.
	Out io.Writer
	// OnExit, if set, is called after each component ends, with
	// unexpected true when nobody asked it to stop.
	OnExit func(p *Proc, unexpected bool)

	mu    sync.Mutex
	procs map[string]*Proc
}

// Get returns the named component's latest process, nil if it never
// started.
func (s *Supervisor) Get(name string) *Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.procs[name]
}

// Alive reports whether the named component runs.
func (s *Supervisor) Alive(name string) bool {
	p := s.Get(name)
	return p != nil && !p.Exited()
}

// Start starts one component, its output appended to its log.
func (s *Supervisor) Start(c Component) (*Proc, error) {
	logPath := filepath.Join(s.LogDir, c.Name+".log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	fmt.Fprintf(lf, "--- %s: %s starting at %s\n", s.Label, c.Name, time.Now().UTC().Format(time.RFC3339))
	prog := c.Path
	if prog == "" {
		prog = s.Self
	}
	cmd := exec.Command(prog, c.Args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// A process group of its own: Ctrl-C at the terminal reaches only the
	// supervisor, which stops the components in order; and if the
	// supervisor dies, they are told to stop.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{Spec: c, Log: logPath, cmd: cmd, exited: make(chan struct{})}
	s.mu.Lock()
	if s.procs == nil {
		s.procs = map[string]*Proc{}
	}
	s.procs[c.Name] = p
	s.mu.Unlock()
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exited)
		s.mu.Lock()
		stopping := p.stopping
		s.mu.Unlock()
		if !stopping && s.Out != nil {
			fmt.Fprintf(s.Out, "%s: %s stopped unexpectedly (%v); the end of %s:\n%s", s.Label, c.Name, p.exitErr, logPath, LogTail(logPath, 8))
		}
		if s.OnExit != nil {
			s.OnExit(p, !stopping)
		}
	}()
	return p, nil
}

// AwaitReady waits until p's probe passes, p ends, ctx ends or bound
// passes; status, if set, is told what is awaited.
func (s *Supervisor) AwaitReady(ctx context.Context, p *Proc, bound time.Duration, status func(string)) error {
	deadline := time.Now().Add(bound)
	for {
		if status != nil {
			status(fmt.Sprintf("%s (%s)", p.Spec.Name, p.Spec.URL))
		}
		if p.Spec.Probe == nil {
			return nil
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := p.Spec.Probe(pctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted while %s was starting", p.Spec.Name)
		case <-p.exited:
			return fmt.Errorf("%s did not start (%v); the end of %s:\n%s", p.Spec.Name, p.exitErr, p.Log, LogTail(p.Log, 12))
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer at %s within %s (%v); see %s", p.Spec.Name, p.Spec.URL, bound, err, p.Log)
		}
	}
}

// Stop stops one process: SIGTERM, and SIGKILL to its process group if it
// has not ended within grace.
func (s *Supervisor) Stop(p *Proc, grace time.Duration) {
	s.mu.Lock()
	p.stopping = true
	s.mu.Unlock()
	if p.Exited() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		if s.Out != nil {
			fmt.Fprintf(s.Out, "%s: %s did not stop within %s of SIGTERM; killing it\n", s.Label, p.Spec.Name, grace)
		}
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// Kill ends one process and its process group at once with SIGKILL, as a
// crash would, and waits until it has ended. It counts as unexpected:
// nobody asked it to stop cleanly.
func (s *Supervisor) Kill(p *Proc) {
	if p.Exited() {
		return
	}
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// StopGroups stops the named components group by group, in order; the
// components of one group stop together. Names that never started are
// skipped.
func (s *Supervisor) StopGroups(grace time.Duration, groups ...[]string) {
	for _, g := range groups {
		var wg sync.WaitGroup
		for _, name := range g {
			p := s.Get(name)
			if p == nil {
				continue
			}
			wg.Add(1)
			go func() { defer wg.Done(); s.Stop(p, grace) }()
		}
		wg.Wait()
	}
}

// PortsFree checks that nothing listens on these addresses yet.
func PortsFree(addrs []string) error {
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if errors.Is(err, syscall.EADDRINUSE) {
			return &PortInUseError{Addr: a}
		}
		if err != nil {
			return err
		}
		l.Close()
	}
	return nil
}

// PortInUseError is PortsFree's answer for an address already taken.
type PortInUseError struct{ Addr string }

func (e *PortInUseError) Error() string { return e.Addr + " is in use" }

// LockDir takes the supervisor's lock on dir (the directory itself), or
// reports that another process holds it.
func LockDir(dir string) (*os.File, bool, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, false, err
	}
	if err := unix.Flock(int(d.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		d.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return d, true, nil
}

// WaitUnlocked waits until no process holds dir's lock (its supervisor has
// stopped), ctx ends, or dir is gone.
func WaitUnlocked(ctx context.Context, dir string) error {
	for {
		l, free, err := LockDir(dir)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err == nil && free {
			l.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// maxControlMessage bounds one request or answer on a control socket.
const maxControlMessage = 1 << 20

// ErrRefused wraps the error a supervisor answered with.
var ErrRefused = errors.New("refused")

// Ask sends one request to the control socket at sock and decodes the
// answer into rep.
func Ask(ctx context.Context, sock string, req, rep any) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if err := json.NewEncoder(conn).Encode(req); err != nil {
		return err
	}
	if err := json.NewDecoder(io.LimitReader(conn, maxControlMessage)).Decode(rep); err != nil {
		return fmt.Errorf("the supervisor did not answer: %w", err)
	}
	return nil
}

// Listen opens the control socket at sock, removing a stale one a killed
// supervisor left (call it holding the directory's lock), readable by its
// owner only.
func Listen(sock string) (net.Listener, error) {
	os.Remove(sock)
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
	os.Chmod(sock, 0o600)
	return ln, nil
}

// Serve answers requests on ln until ctx ends: handle gets each request's
// bytes and returns the answer, and optionally what to do once the answer
// is sent (stop everything, say).
func Serve(ctx context.Context, ln net.Listener, handle func(req json.RawMessage) (rep any, after func())) {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer conn.Close()
			var req json.RawMessage
			if err := json.NewDecoder(io.LimitReader(conn, 64<<10)).Decode(&req); err != nil {
				return
			}
			rep, after := handle(req)
			json.NewEncoder(conn).Encode(rep)
			if after != nil {
				after()
			}
		}()
	}
}

// LogTail is the last n lines of a log file, indented.
func LogTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > 64<<10 {
		f.Seek(-64<<10, io.SeekEnd)
	}
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "    %s\n", l)
	}
	return b.String()
}

// Detached is a supervisor started in the background by StartDetached.
type Detached struct {
	cmd  *exec.Cmd
	done chan error
}

// StartDetached starts prog with args as a supervisor in the background:
// in a session of its own (a terminal's Ctrl-C and hang-up do not reach
// it), its output appended to logPath.
func StartDetached(prog string, args []string, logPath string) (*Detached, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	cmd := exec.Command(prog, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &Detached{cmd: cmd, done: make(chan error, 1)}
	go func() { d.done <- cmd.Wait() }()
	return d, nil
}

// ExitedError is Await's answer when the background supervisor ended
// before it was ready.
type ExitedError struct{ Err error }

func (e *ExitedError) Error() string { return fmt.Sprintf("it ended (%v)", e.Err) }

// ErrNotReady is Await's answer when bound passed first.
var ErrNotReady = errors.New("not ready in time")

// Await polls ready until it reports true (then the supervisor is left to
// run on its own), the supervisor ends (*ExitedError), bound passes
// (ErrNotReady) or ctx ends (its error).
func (d *Detached) Await(ctx context.Context, bound time.Duration, ready func(context.Context) bool) error {
	deadline := time.After(bound)
	for {
		select {
		case err := <-d.done:
			return &ExitedError{Err: err}
		case <-deadline:
			return ErrNotReady
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok := ready(pctx)
		cancel()
		if ok {
			d.cmd.Process.Release()
			return nil
		}
	}
}
