package supervise

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestStartStopKill: components run as processes with their output in
// their logs; Stop ends one with SIGTERM, Kill with SIGKILL (told as
// unexpected), StopGroups stops the rest in order; a component that exits
// at start is reported with the end of its log.
func TestStartStopKill(t *testing.T) {
	var out lockedBuffer
	var mu sync.Mutex
	var ended []string
	s := &Supervisor{LogDir: t.TempDir(), Label: "test", Out: &out, OnExit: func(p *Proc, unexpected bool) {
		mu.Lock()
		defer mu.Unlock()
		ended = append(ended, p.Spec.Name+map[bool]string{true: "!", false: ""}[unexpected])
	}}
	sh := "/bin/sh"
	start := func(name, script string, probe func(context.Context) error) *Proc {
		p, err := s.Start(Component{Name: name, Path: sh, Args: []string{"-c", script}, Probe: probe})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	logDir := s.LogDir
	a := start("a", "echo hello from a; exec sleep 60", func(context.Context) error {
		// Ready once it has said hello.
		if b, _ := os.ReadFile(filepath.Join(logDir, "a.log")); !strings.Contains(string(b), "hello from a") {
			return errors.New("not yet")
		}
		return nil
	})
	b := start("b", "exec sleep 60", nil)
	c := start("c", "exec sleep 60", nil)
	if err := s.AwaitReady(ctx, a, time.Minute, nil); err != nil {
		t.Fatal(err)
	}
	s.Kill(b)
	if !b.Exited() || s.Alive("b") {
		t.Fatal("b runs after Kill")
	}
	if running, exit := b.State(); running || !strings.Contains(exit, "killed") {
		t.Errorf("b: running %v, exit %q", running, exit)
	}
	s.StopGroups(10*time.Second, []string{"a"}, []string{"b", "c", "never-started"})
	if a.Exited() != true || c.Exited() != true {
		t.Fatal("a or c still runs")
	}
	for _, p := range []*Proc{a, b, c} {
		if err := syscall.Kill(p.PID(), 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists: %v", p.Spec.Name, p.PID(), err)
		}
	}
	if log, _ := os.ReadFile(filepath.Join(s.LogDir, "a.log")); !strings.Contains(string(log), "hello from a") {
		t.Errorf("a.log: %q", log)
	}
	// OnExit runs after the process is reaped: wait for the watchers.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		n := len(ended)
		mu.Unlock()
		if n == 3 || time.Now().After(deadline) {
			break
		}
	}
	mu.Lock()
	got := strings.Join(ended, " ")
	mu.Unlock()
	if !strings.Contains(got, "b!") || strings.Contains(got, "a!") || strings.Contains(got, "c!") {
		t.Errorf("exits told: %q", got)
	}
	if !strings.Contains(out.String(), "b stopped unexpectedly") || strings.Contains(out.String(), "a stopped unexpectedly") {
		t.Errorf("events: %q", out.String())
	}

	// A component that fails at start: the wait says so, with its log.
	d := start("d", "echo cannot start: no such thing >&2; exit 3", func(context.Context) error { return errors.New("not yet") })
	err := s.AwaitReady(ctx, d, time.Minute, nil)
	if err == nil || !strings.Contains(err.Error(), "d did not start") || !strings.Contains(err.Error(), "cannot start: no such thing") {
		t.Errorf("AwaitReady of a failing component: %v", err)
	}
}

// TestLockAndControlSocket: one holder of a directory's lock; a request
// on the control socket gets its answer, and the action after it runs.
func TestLockAndControlSocket(t *testing.T) {
	dir := t.TempDir()
	l, ok, err := LockDir(dir)
	if err != nil || !ok {
		t.Fatalf("first lock: %v %v", ok, err)
	}
	if _, ok, err := LockDir(dir); err != nil || ok {
		t.Fatalf("second lock taken: %v %v", ok, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sock := filepath.Join(dir, "c.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	after := make(chan struct{})
	go Serve(ctx, ln, func(req json.RawMessage) (any, func()) {
		return map[string]string{"echo": string(req)}, func() { close(after) }
	})
	var rep map[string]string
	if err := Ask(ctx, sock, map[string]string{"op": "status"}, &rep); err != nil || !strings.Contains(rep["echo"], "status") {
		t.Fatalf("ask: %v %v", rep, err)
	}
	select {
	case <-after:
	case <-ctx.Done():
		t.Fatal("the action after the answer did not run")
	}
	l.Close()
	if err := WaitUnlocked(ctx, dir); err != nil {
		t.Fatal(err)
	}
}
