package isolate

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, 100 on
// every Linux architecture this runs on (the kernel's ABI, independent
// of its internal tick).
const userHZ = 100

// cpuTime returns the CPU time (user and system, every thread) the worker
// has used so far, as the host reads it: its cgroup's cpu.stat where the
// worker has one (microseconds), otherwise /proc/PID/stat (1/USER_HZ s)
// while the process is there, and the rusage of its reaping once it is
// gone. The worker says nothing about it itself.
func (w *worker) cpuTime() (time.Duration, bool) {
	if w.cg != nil {
		if d, err := w.cg.cpuUsage(); err == nil {
			return d, true
		}
	}
	if w.cmd == nil || w.cmd.Process == nil {
		return 0, false // never started
	}
	select {
	case <-w.done:
		return reapedCPUTime(w)
	default:
	}
	d, err := procCPUTime(w.cmd.Process.Pid)
	select {
	case <-w.done:
		// Reaped while (or before) the file was read: the pid may have
		// been another process's by then.
		return reapedCPUTime(w)
	default:
	}
	if err != nil {
		// Exiting: its rusage comes with the reaping, which is near.
		select {
		case <-w.done:
			return reapedCPUTime(w)
		case <-time.After(time.Second):
			return 0, false
		}
	}
	return d, true
}

func reapedCPUTime(w *worker) (time.Duration, bool) {
	if ps := w.cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()), true
		}
	}
	return 0, false
}

// procCPUTime reads utime + stime of process pid (all its threads, live
// and exited) from /proc/PID/stat.
func procCPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold anything: fields are counted
	// after its closing parenthesis, state being field 3.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("/proc/PID/stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("/proc/PID/stat: too few fields")
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64) // field 14, utime
	st, err2 := strconv.ParseUint(f[12], 10, 64) // field 15, stime
	if err1 != nil || err2 != nil {
		return 0, errors.New("/proc/PID/stat: utime or stime is not a number")
	}
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// cpuUsage reads the group's CPU time from cpu.stat (usage_usec).
func (w *workerCgroup) cpuUsage() (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(w.dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "usage_usec "); ok {
			us, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, err
			}
			return time.Duration(us) * time.Microsecond, nil
		}
	}
	return 0, errors.New("cpu.stat has no usage_usec")
}
