// Package measure holds what the benchmarks measure with beyond the
// testing package: the peak resident memory of a process and its
// children, sampled from /proc (Linux) while a benchmark runs — each
// process's VmHWM, the kernel's own high-water mark of its resident set,
// read until the process exits — the CPU time of reaped children, and the
// build of a Go guest for wasip1.
package measure

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SelfCPU is this process's CPU time (user and system).
func SelfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BuildGuest builds the Go package pkg for wasip1 and returns the module
// (bounded: 10 minutes).
func BuildGuest(tb testing.TB, pkg string) []byte {
	tb.Helper()
	out := filepath.Join(tb.TempDir(), "guest.wasm")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if msg, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("building %s: %v: %s", pkg, err, msg)
	}
	f, err := os.Open(out)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	m, err := io.ReadAll(f)
	if err != nil {
		tb.Fatal(err)
	}
	return m
}

// Sampler polls the processes whose parent is Root (and Root itself).
type Sampler struct {
	mu   sync.Mutex
	peak map[int]Peak // by pid
	stop chan struct{}
	done chan struct{}
}

// Peak is one process's highest VmHWM seen, and the CPU time (user and
// system) it had used at the last sample.
type Peak struct {
	PID   int
	Name  string // comm
	Bytes int64
	CPU   time.Duration
}

// StartRSS samples root and its children every interval until Stop.
func StartRSS(root int, interval time.Duration) *Sampler {
	s := &Sampler{peak: map[int]Peak{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			s.sample(root)
			select {
			case <-s.stop:
				s.sample(root)
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// Stop ends sampling and returns each process's peak, by pid.
func (s *Sampler) Stop() []Peak {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Peak
	for _, p := range s.peak {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Peak) int { return a.PID - b.PID })
	return out
}

// Of is root's own peak, and the largest of its children's.
func Of(peaks []Peak, root int) (self, children int64) {
	for _, p := range peaks {
		if p.PID == root {
			self = p.Bytes
		} else {
			children = max(children, p.Bytes)
		}
	}
	return self, children
}

// ChildrenCPU is the CPU time root's children had used at their last
// sample (a lower bound by at most one interval each).
func ChildrenCPU(peaks []Peak, root int) time.Duration {
	var d time.Duration
	for _, p := range peaks {
		if p.PID != root {
			d += p.CPU
		}
	}
	return d
}

// TreeCPU is the CPU time (user and system) of process pid, of its
// children it reaped, and of its live descendants.
func TreeCPU(pid int) time.Duration {
	t := statTicks(pid, 13) // cutime, cstime: its reaped children
	t += cpuOf(pid)
	for _, c := range children(pid) {
		t += cpuOf(c)
	}
	return t
}

// clockTick is the unit of /proc/PID/stat's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// cpuOf reads a process's user and system time from /proc/PID/stat.
func cpuOf(pid int) time.Duration { return statTicks(pid, 11) }

// statTicks reads two adjacent times of /proc/PID/stat, from field 14+at
// of the line counting from the state: at 11, utime and stime; at 13,
// cutime and cstime.
func statTicks(pid, at int) time.Duration {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0
	}
	// pid (comm) state ppid … utime stime cutime cstime: comm may hold
	// spaces and parentheses.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < at+2 {
		return 0
	}
	u, _ := strconv.ParseInt(f[at], 10, 64)
	st, _ := strconv.ParseInt(f[at+1], 10, 64)
	return time.Duration(u+st) * clockTick
}

func (s *Sampler) sample(root int) {
	pids := append([]int{root}, children(root)...)
	for _, pid := range pids {
		name, hwm := status(pid)
		if hwm == 0 {
			continue
		}
		cpu := cpuOf(pid)
		s.mu.Lock()
		p := s.peak[pid]
		s.peak[pid] = Peak{PID: pid, Name: name, Bytes: max(p.Bytes, hwm), CPU: max(p.CPU, cpu)}
		s.mu.Unlock()
	}
}

// children lists a process's children from /proc/PID/task/*/children
// (cheap: no scan of every process).
func children(pid int) []int {
	tasks, _ := filepath.Glob(filepath.Join("/proc", strconv.Itoa(pid), "task", "*", "children"))
	var out []int
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

// status reads a process's name and VmHWM in bytes.
func status(pid int) (string, int64) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return "", 0
	}
	defer f.Close()
	var name string
	var hwm int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "Name:"):
			name = strings.TrimSpace(line[len("Name:"):])
		case strings.HasPrefix(line, "VmHWM:"):
			f := strings.Fields(line[len("VmHWM:"):])
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				hwm = kb << 10
			}
		}
	}
	return name, hwm
}
