// Package ops is the arithmetic of Cloister's challenge operators, shared
// by the WebAssembly program (package main above it) and native tests and
// benchmarks that compare its bytes with the isolate's.
package ops

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"os"
	"slices"
	"strings"
)

// Compute runs one operator; the probes run here too (and, natively, do
// what the host lets them).
func Compute(name string, n int, seed []byte) ([]byte, error) {
	r := newRand(seed)
	switch name {
	case "matmul":
		return matmul(r, n), nil
	case "hashchain":
		return hashchain(seed, n), nil
	case "sort":
		return sortOp(r, n), nil
	case "nn":
		return forward(r, n), nil
	case "probe-memory":
		return probeMemory(n), nil
	case "probe-deadline":
		for i := uint64(0); ; i++ { // until the isolate kills it
			if i == ^uint64(0) {
				return nil, nil
			}
		}
	case "probe-network":
		return probeNetwork(), nil
	case "probe-files":
		return probeFiles(), nil
	}
	return nil, fmt.Errorf("no operator %q", name)
}

// rand is a counter-mode SHA-256 stream: the one source of U.
type rand struct {
	key [32]byte
	ctr uint64
	buf []byte
}

func newRand(seed []byte) *rand {
	r := &rand{}
	r.key = sha256.Sum256(append([]byte("cloister/piee/input/v1\n"), seed...))
	return r
}

func (r *rand) u64() uint64 {
	if len(r.buf) < 8 {
		var b [40]byte
		copy(b[:], r.key[:])
		binary.BigEndian.PutUint64(b[32:], r.ctr)
		r.ctr++
		h := sha256.Sum256(b[:])
		r.buf = append(r.buf, h[:]...)
	}
	v := binary.BigEndian.Uint64(r.buf)
	r.buf = r.buf[8:]
	return v
}

// in returns an integer in [lo, hi].
func (r *rand) in(lo, hi int64) int64 { return lo + int64(r.u64()%uint64(hi-lo+1)) }

func matmul(r *rand, n int) []byte {
	a := make([]int32, n*n)
	b := make([]int32, n*n)
	for i := range a {
		a[i] = int32(r.in(-1000, 1000))
	}
	for i := range b {
		b[i] = int32(r.in(-1000, 1000))
	}
	out := make([]byte, 0, 8*n*n)
	for i := 0; i < n; i++ {
		for j := 0; j < n; j++ {
			var s int64
			for k := 0; k < n; k++ {
				s += int64(a[i*n+k]) * int64(b[k*n+j])
			}
			out = binary.LittleEndian.AppendUint64(out, uint64(s))
		}
	}
	return out
}

func hashchain(seed []byte, n int) []byte {
	h := sha256.Sum256(seed)
	for i := 1; i < n; i++ {
		h = sha256.Sum256(h[:])
	}
	return h[:]
}

func sortOp(r *rand, n int) []byte {
	v := make([]uint64, n)
	for i := range v {
		v[i] = r.u64()
	}
	slices.Sort(v)
	out := make([]byte, 0, 8*n)
	for _, x := range v {
		out = binary.LittleEndian.AppendUint64(out, x)
	}
	return out
}

// The network's weights are fixed (part of the operator, like a
// published model's): drawn from a constant seed, not from the
// challenge's.
const (
	channels = 4
	classes  = 10
	fracBits = 8 // activations and weights are Q8 fixed point
)

// forward is a small convolutional network in fixed point: int32
// activations in Q8, products rescaled by an arithmetic shift (rounding
// toward −∞, as >> does on every engine).
func forward(r *rand, n int) []byte {
	if n < 4 {
		n = 4
	}
	w := newRand([]byte("cloister/piee/nn/weights/v1"))
	img := make([]int32, n*n)
	for i := range img {
		img[i] = int32(r.in(0, 255)) // pixels in [0, 1) as Q8
	}
	var kern [channels][9]int32
	var bias [channels]int32
	for c := range kern {
		for i := range kern[c] {
			kern[c][i] = int32(w.in(-128, 127))
		}
		bias[c] = int32(w.in(-64, 64))
	}
	// Conv2d 3×3, padding 0, then ReLU.
	m := n - 2
	conv := make([]int32, channels*m*m)
	for c := 0; c < channels; c++ {
		for y := 0; y < m; y++ {
			for x := 0; x < m; x++ {
				s := bias[c] << fracBits
				for ky := 0; ky < 3; ky++ {
					for kx := 0; kx < 3; kx++ {
						s += img[(y+ky)*n+x+kx] * kern[c][ky*3+kx]
					}
				}
				s >>= fracBits
				conv[(c*m+y)*m+x] = max(s, 0)
			}
		}
	}
	// MaxPool2d 2×2.
	p := m / 2
	pool := make([]int32, channels*p*p)
	for c := 0; c < channels; c++ {
		for y := 0; y < p; y++ {
			for x := 0; x < p; x++ {
				b := (c*m+2*y)*m + 2*x
				pool[(c*p+y)*p+x] = max(conv[b], conv[b+1], conv[b+m], conv[b+m+1])
			}
		}
	}
	// Linear to 10 logits.
	logits := make([]int64, classes)
	for k := range logits {
		s := int64(w.in(-256, 256)) << fracBits
		for i := range pool {
			s += int64(pool[i]) * w.in(-32, 32)
		}
		logits[k] = s >> fracBits
	}
	probs := softmaxQ16(logits)
	out := make([]byte, 0, 8*classes+4*classes+1)
	for _, l := range logits {
		out = binary.LittleEndian.AppendUint64(out, uint64(l))
	}
	for _, q := range probs {
		out = binary.LittleEndian.AppendUint32(out, q)
	}
	best := 0
	for k := range probs {
		if probs[k] > probs[best] {
			best = k
		}
	}
	return append(out, byte(best))
}

// softmaxQ16 is softmax over Q8 logits with an integer exp: e^x for x ≤ 0
// in Q16 from 2^(x·log2 e), the integer part a shift, the fraction a
// cubic; the result is Q16 probabilities (summing to about 65536).
func softmaxQ16(logits []int64) []uint32 {
	mx := slices.Max(logits)
	exps := make([]uint64, len(logits))
	var sum uint64
	for i, l := range logits {
		exps[i] = expQ16(l - mx)
		sum += exps[i]
	}
	out := make([]uint32, len(logits))
	for i, e := range exps {
		out[i] = uint32((e << 16) / sum)
	}
	return out
}

// expQ16 returns e^(x/256) in Q16 for x ≤ 0.
func expQ16(x int64) uint64 {
	// y = x·log2(e) in Q8; log2 e ≈ 369/256.
	y := (x * 369) >> 8
	ip := -(y >> 8) // integer part of −y (≥ 0)
	if ip >= 32 {
		return 0
	}
	f := uint64(y & 0xff) // fraction in [0, 1) as Q8: 2^(f/256 − 1)·2 = 2^(f/256)
	// 2^t for t in [0,1) in Q16 ≈ 1 + 0.6931t + 0.2402t² + 0.0555t³.
	t := f << 8 // Q16
	p := uint64(65536) + (45426*t)>>16 + (((15743 * t) >> 16) * t >> 16) + ((((3638 * t) >> 16) * t >> 16) * t >> 16)
	return p >> uint(ip)
}

func probeMemory(mib int) []byte {
	var keep [][]byte
	for i := 0; i < mib; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = byte(i)
		}
		keep = append(keep, b)
	}
	return []byte(fmt.Sprintf("allocated %d MiB\n", len(keep)))
}

// probeNetwork asks the host for a connection on every descriptor a
// guest could name (sock_accept, WASI preview 1's only network call: it
// has no socket creation) and records each errno. Go's own net package
// is not used: on wasip1 it is an in-process simulation that never
// reaches the host.
func probeNetwork() []byte {
	var sb strings.Builder
	for fd := int32(0); fd < 16; fd++ {
		if e := acceptErrno(fd); e == 0 {
			fmt.Fprintf(&sb, "sock_accept fd %d: reached\n", fd)
		} else {
			fmt.Fprintf(&sb, "sock_accept fd %d: refused (errno %d)\n", fd, e)
		}
	}
	return []byte(sb.String())
}

func probeFiles() []byte {
	var sb strings.Builder
	for _, p := range []string{"/etc/passwd", "/proc/self/environ", "/input/../etc/passwd", "/output/../etc/hostname", "../../etc/passwd", "/dev/null"} {
		if _, err := os.ReadFile(p); err == nil {
			fmt.Fprintf(&sb, "read %s: allowed\n", p)
		} else {
			fmt.Fprintf(&sb, "read %s: refused\n", p)
		}
	}
	for _, p := range []string{"/tmp/piee-probe", "/input/piee-probe", "/piee-probe"} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err == nil {
			fmt.Fprintf(&sb, "write %s: allowed\n", p)
		} else {
			fmt.Fprintf(&sb, "write %s: refused\n", p)
		}
	}
	if ents, err := os.ReadDir("/"); err == nil {
		names := make([]string, 0, len(ents))
		for _, e := range ents {
			names = append(names, e.Name())
		}
		slices.Sort(names)
		fmt.Fprintf(&sb, "list /: %s\n", strings.Join(names, " "))
	} else {
		sb.WriteString("list /: refused\n")
	}
	return []byte(sb.String())
}
