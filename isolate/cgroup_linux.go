package isolate

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Each worker is started directly inside its own cgroup v2 (clone3 with
// CLONE_INTO_CGROUP, so not one instruction of it runs outside), under a
// parent group created for this Runtime:
//
//	<our cgroup>/cloister-<pid>-<runtime>/w<n>   memory.max, memory.swap.max, pids.max, cpu.max
//
// The deadline kill writes cgroup.kill, which ends every task in the group.
// cgroup v1 is not used: where v2 controllers are unavailable (hybrid
// hierarchies, read-only /sys/fs/cgroup, no delegation), the reason is
// reported and the rlimits are the only resource bound.

// Worker cgroup limits besides memory.
const (
	cgroupPidsMax = 256
	cgroupCPUMax  = "100000 100000" // one CPU's worth of time per 100 ms
	// cgroupMemoryOverhead is added to the guest ceiling: the worker's Go
	// runtime, wazero's compiled code and the call stack (wazero allows up
	// to 400 MB of it) are outside linear memory.
	cgroupMemoryOverhead = 768 << 20
)

var cgroupSeq atomic.Uint64

type cgroupManager struct {
	dir string
	n   atomic.Uint64
}

type workerCgroup struct {
	dir string
	fd  int
}

// newCgroupManager finds this process's cgroup v2 directory, checks that the
// memory, pids and cpu controllers can be delegated to a child, and creates
// the Runtime's parent group. On failure it returns the reason.
func newCgroupManager() (*cgroupManager, string) {
	mount, err := cgroup2Mount()
	if err != nil {
		return nil, err.Error()
	}
	rel, err := ownCgroup()
	if err != nil {
		return nil, err.Error()
	}
	base := filepath.Join(mount, rel)
	avail, err := os.ReadFile(filepath.Join(base, "cgroup.controllers"))
	if err != nil {
		return nil, fmt.Sprintf("cannot read %s: %v", filepath.Join(base, "cgroup.controllers"), err)
	}
	have := strings.Fields(string(avail))
	for _, c := range []string{"memory", "pids", "cpu"} {
		if !contains(have, c) {
			return nil, fmt.Sprintf("cgroup v2 controller %q is not available in %s (controllers: %q)", c, base, strings.TrimSpace(string(avail)))
		}
	}
	// Our own group must delegate the controllers to its children; that is
	// only possible if it is the root or already does so.
	if err := enableControllers(base); err != nil {
		return nil, fmt.Sprintf("cannot enable memory, pids and cpu controllers below %s: %v", base, err)
	}
	// One group per Runtime: several may live in one process.
	dir := filepath.Join(base, fmt.Sprintf("cloister-%d-%d", os.Getpid(), cgroupSeq.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return nil, fmt.Sprintf("cannot create %s: %v", dir, err)
	}
	if err := enableControllers(dir); err != nil {
		os.Remove(dir)
		return nil, fmt.Sprintf("cannot enable controllers in %s: %v", dir, err)
	}
	return &cgroupManager{dir: dir}, ""
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func enableControllers(dir string) error {
	cur, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	var want []string
	for _, c := range []string{"memory", "pids", "cpu"} {
		if !contains(strings.Fields(string(cur)), c) {
			want = append(want, "+"+c)
		}
	}
	if len(want) == 0 {
		return nil
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(want, " ")), 0)
}

func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("cannot read mount table: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ... mount-point ... - fstype source options
		fields := strings.Fields(sc.Text())
		for i, fld := range fields {
			if fld == "-" && i+1 < len(fields) && fields[i+1] == "cgroup2" && len(fields) > 4 {
				return fields[4], nil
			}
		}
	}
	return "", errors.New("no cgroup v2 file system is mounted")
}

func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", fmt.Errorf("cannot read /proc/self/cgroup: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return rest, nil
		}
	}
	return "", errors.New("this process is not in a cgroup v2 hierarchy")
}

func (m *cgroupManager) newWorker() (*workerCgroup, error) {
	dir := filepath.Join(m.dir, fmt.Sprintf("w%d", m.n.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cannot create worker cgroup: %v", err)
	}
	w := &workerCgroup{dir: dir, fd: -1}
	for file, val := range map[string]string{
		"pids.max": strconv.Itoa(cgroupPidsMax),
		"cpu.max":  cgroupCPUMax,
		// Until the job's ceiling is known (warm workers), the default.
		"memory.max": strconv.FormatUint(DefaultMemory+cgroupMemoryOverhead, 10),
	} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0); err != nil {
			w.remove()
			return nil, fmt.Errorf("cannot set %s: %v", file, err)
		}
	}
	// No swap: a guest must not push the host into swapping. Not every
	// kernel has the file.
	_ = os.WriteFile(filepath.Join(dir, "memory.swap.max"), []byte("0"), 0)
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		w.remove()
		return nil, fmt.Errorf("cannot open worker cgroup: %v", err)
	}
	w.fd = fd
	return w, nil
}

func (w *workerCgroup) setMemory(ceiling uint64) error {
	return os.WriteFile(filepath.Join(w.dir, "memory.max"), []byte(strconv.FormatUint(ceiling+cgroupMemoryOverhead, 10)), 0)
}

func (w *workerCgroup) closeFD() {
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
}

func (w *workerCgroup) kill() error {
	return os.WriteFile(filepath.Join(w.dir, "cgroup.kill"), []byte("1"), 0)
}

func (w *workerCgroup) oomKilled() bool {
	b, err := os.ReadFile(filepath.Join(w.dir, "memory.events"))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n > 0
		}
	}
	return false
}

// remove deletes the group once its tasks are gone (after a kill the kernel
// may take a moment to empty it).
func (w *workerCgroup) remove() {
	w.closeFD()
	for i := 0; i < 50; i++ {
		if err := unix.Rmdir(w.dir); err == nil || errors.Is(err, unix.ENOENT) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (m *cgroupManager) close() error {
	if err := unix.Rmdir(m.dir); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("isolate: removing cgroup %s: %w", m.dir, err)
	}
	return nil
}
