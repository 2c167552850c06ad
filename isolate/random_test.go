package isolate

import (
	"bytes"
	"io"
	"testing"
	"time"
)

// wasmRandom builds a module whose _start calls WASI random_get twice, for
// 16 bytes each, and writes the 32 bytes to stdout with fd_write.
func wasmRandom() []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = append(m, section(1, vec(
		[]byte{0x60, 0, 0},                               // 0: () -> ()
		[]byte{0x60, 2, 0x7f, 0x7f, 1, 0x7f},             // 1: random_get(buf, len) -> errno
		[]byte{0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f}, // 2: fd_write(fd, iovs, n, nwritten) -> errno
	))...)
	m = append(m, section(2, vec(
		append(append(str("wasi_snapshot_preview1"), str("random_get")...), 0, 1),
		append(append(str("wasi_snapshot_preview1"), str("fd_write")...), 0, 2),
	))...)
	m = append(m, section(3, vec([]byte{0}))...)
	m = append(m, section(5, vec([]byte{0, 1}))...)
	m = append(m, section(7, vec(append(str("_start"), 0, 2), append(str("memory"), 2, 0)))...)
	i32 := func(v int32) []byte { return append([]byte{0x41}, sleb(int64(v))...) }
	var body []byte
	body = append(body, 0) // no locals
	// random_get(16, 16); random_get(32, 16)
	body = append(append(append(body, i32(16)...), i32(16)...), 0x10, 0, 0x1a)
	body = append(append(append(body, i32(32)...), i32(16)...), 0x10, 0, 0x1a)
	// iovec at 0: {ptr 16, len 32}
	body = append(append(append(body, i32(0)...), i32(16)...), 0x36, 2, 0)
	body = append(append(append(body, i32(4)...), i32(32)...), 0x36, 2, 0)
	// fd_write(1, 0, 1, 64)
	body = append(append(append(append(append(body, i32(1)...), i32(0)...), i32(1)...), i32(64)...), 0x10, 1, 0x1a)
	body = append(body, 0x0b)
	m = append(m, section(10, vec(append(leb(uint32(len(body))), body...)))...)
	return m
}

// TestRandomSource checks where random_get's bytes come from: without
// Deterministic, from the operating system's generator, so two runs never
// see the same bytes; with it, from the seed, so two runs with one seed see
// the same bytes and another seed gives others.
func TestRandomSource(t *testing.T) {
	mod := wasmRandom()
	for _, inproc := range []bool{false, true} {
		name := "worker"
		if inproc {
			name = "in-process"
		}
		t.Run(name, func(t *testing.T) {
			r := newRuntime(t, Options{InProcess: inproc})
			run := func(det bool, seed byte) []byte {
				t.Helper()
				cfg := &Config{Module: mod, Deterministic: det, Timeout: 30 * time.Second}
				cfg.Seed[0] = seed
				res := mustRun(t, r, cfg)
				wantOutcome(t, res, OutcomeExited, 0)
				if len(res.Stdout) != 32 {
					t.Fatalf("the guest wrote %d bytes, want 32", len(res.Stdout))
				}
				return res.Stdout
			}
			a, b := run(false, 0), run(false, 0)
			if bytes.Equal(a, b) {
				t.Errorf("two runs without Deterministic read the same random bytes %x: the source is not random", a)
			}
			if bytes.Equal(a[:16], a[16:]) {
				t.Errorf("two random_get calls in one run returned the same bytes %x", a[:16])
			}
			c, d, e := run(true, 7), run(true, 7), run(true, 8)
			if !bytes.Equal(c, d) {
				t.Errorf("same seed, different random bytes: %x, %x", c, d)
			}
			if bytes.Equal(c, e) {
				t.Errorf("different seeds, same random bytes %x", c)
			}
			var seed [32]byte
			seed[0] = 7
			want := make([]byte, 32)
			if _, err := io.ReadFull(seededReader(seed), want); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(c, want) {
				t.Errorf("deterministic random bytes %x, want the seeded ChaCha8 stream %x", c, want)
			}
		})
	}
}
