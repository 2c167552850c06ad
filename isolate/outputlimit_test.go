package isolate

import (
	"strings"
	"testing"
	"time"
)

// wasmOutputLimits builds a module that, through plain WASI calls:
//
//	creates /output/a          (errno → byte 0)
//	writes 10 bytes to it      (errno → byte 1, bytes written → byte 4)
//	writes 10 bytes again      (errno → byte 2)
//	creates /output/b          (errno → byte 3)
//
// and writes those 5 bytes to stdout. With MaxOutput 4 and MaxOutputFiles 1
// the first write is cut to 4 bytes, the second fails (ENOSPC) and the
// second create fails (EDQUOT).
func wasmOutputLimits() []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = append(m, section(1, vec(
		[]byte{0x60, 0, 0}, // 0: () -> ()
		// 1: path_open(fd, dirflags, path, path_len, oflags, rights_base i64, rights_inheriting i64, fdflags, fd_out) -> errno
		[]byte{0x60, 9, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7e, 0x7e, 0x7f, 0x7f, 1, 0x7f},
		// 2: fd_write(fd, iovs, iovs_len, nwritten) -> errno
		[]byte{0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f},
	))...)
	m = append(m, section(2, vec(
		append(append(str("wasi_snapshot_preview1"), str("path_open")...), 0, 1),
		append(append(str("wasi_snapshot_preview1"), str("fd_write")...), 0, 2),
	))...)
	m = append(m, section(3, vec([]byte{0}))...)
	m = append(m, section(5, vec([]byte{0, 1}))...)
	m = append(m, section(7, vec(append(str("_start"), 0, 2), append(str("memory"), 2, 0)))...)

	i32 := func(v int32) []byte { return append([]byte{0x41}, sleb(int64(v))...) }
	i64 := func(v int64) []byte { return append([]byte{0x42}, sleb(v)...) }
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	store8 := []byte{0x3a, 0, 0}
	store32 := []byte{0x36, 2, 0}
	load32 := []byte{0x28, 2, 0}
	// Memory: 100 "output/a", 120 "output/b", 140 "0123456789",
	// 200.. results, 300 opened fd, 304 bytes written, 0 iovec.
	open := func(pathAt int32, resultAt int32) []byte {
		// path_open(3 = the preopened "/", 0, path, 8, O_CREAT, all rights, all rights, 0, &fd)
		return cat(i32(resultAt), i32(3), i32(0), i32(pathAt), i32(8), i32(1), i64(-1), i64(-1), i32(0), i32(300), []byte{0x10, 0}, store8)
	}
	write := func(resultAt int32) []byte {
		return cat(i32(resultAt), i32(300), load32, i32(0), i32(1), i32(304), []byte{0x10, 1}, store8)
	}
	body := cat([]byte{0},
		open(100, 200),
		i32(0), i32(140), store32, i32(4), i32(10), store32, // iovec {140, 10}
		write(201),
		i32(204), i32(304), load32, store8,
		write(202),
		open(120, 203),
		i32(0), i32(200), store32, i32(4), i32(5), store32, // iovec {200, 5}
		i32(1), i32(0), i32(1), i32(304), []byte{0x10, 1, 0x1a}, // fd_write(stdout)
		[]byte{0x0b})
	m = append(m, section(10, vec(append(leb(uint32(len(body))), body...)))...)
	seg := func(at int32, s string) []byte { return cat([]byte{0}, i32(at), []byte{0x0b}, str(s)) }
	m = append(m, section(11, vec(seg(100, "output/a"), seg(120, "output/b"), seg(140, "0123456789")))...)
	return m
}

// TestOutputLimitErrno checks what the guest is told when /output/ is full:
// ENOSPC once the bytes are used up, EDQUOT past the file count, and that
// the report names the limits.
func TestOutputLimitErrno(t *testing.T) {
	mod := wasmOutputLimits()
	for _, inproc := range []bool{false, true} {
		name := "worker"
		if inproc {
			name = "in-process"
		}
		t.Run(name, func(t *testing.T) {
			r := newRuntime(t, Options{InProcess: inproc})
			res := mustRun(t, r, &Config{Module: mod, MaxOutput: 4, MaxOutputFiles: 1, Timeout: 30 * time.Second})
			wantOutcome(t, res, OutcomeExited, 0)
			got := res.Stdout
			if len(got) != 5 {
				t.Fatalf("stdout %x, want 5 bytes", got)
			}
			if got[0] != 0 || got[1] != 0 || got[4] != 4 {
				t.Errorf("create %d, first write %d (%d bytes): want success and 4 bytes (what fits)", got[0], got[1], got[4])
			}
			if got[2] != wasiErrnoNospc {
				t.Errorf("write past max_output: errno %d, want ENOSPC (%d; EIO is %d)", got[2], wasiErrnoNospc, wasiErrnoIO)
			}
			if got[3] != wasiErrnoDquot {
				t.Errorf("create past max_output_files: errno %d, want EDQUOT (%d; EIO is %d)", got[3], wasiErrnoDquot, wasiErrnoIO)
			}
			rep := res.Report
			if !rep.OutputLimited || strings.Join(rep.OutputLimitsHit, ",") != "max_output,max_output_files" {
				t.Errorf("report: output_limited %v, output_limits_hit %q; want both limits named", rep.OutputLimited, rep.OutputLimitsHit)
			}
			w := strings.Join(rep.Warnings, "\n")
			if !strings.Contains(w, "4 bytes") || !strings.Contains(w, "ENOSPC") || !strings.Contains(w, "1 files") || !strings.Contains(w, "EDQUOT") {
				t.Errorf("warnings %q do not say which limits were hit", rep.Warnings)
			}
			if len(res.Outputs) != 1 || string(outputBytes(t, res.Outputs[0])) != "0123" {
				t.Errorf("outputs %v, want a = \"0123\"", res.Report.Outputs)
			}
		})
	}
	// Without hitting a limit nothing is flagged.
	r := newRuntime(t, Options{InProcess: true})
	res := mustRun(t, r, &Config{Module: mod, Timeout: 30 * time.Second})
	wantOutcome(t, res, OutcomeExited, 0)
	if res.Report.OutputLimited || len(res.Report.OutputLimitsHit) != 0 || len(res.Report.Warnings) != 0 {
		t.Errorf("no limit hit, yet the report says %v %q %q", res.Report.OutputLimited, res.Report.OutputLimitsHit, res.Report.Warnings)
	}
	if string(res.Stdout) != "\x00\x00\x00\x00\x0a" {
		t.Errorf("stdout %x, want every call to succeed and 10 bytes written", res.Stdout)
	}
}
