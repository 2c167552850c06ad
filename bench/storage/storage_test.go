package storage

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"filippo.io/age"

	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/blob/server"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/registrytest"
	"github.com/cloisterhq/cloister/sealed"
)

var sizeMiB = flag.Int("storage.mib", 64, "MiB per sealed file or blob in the storage benchmarks")

func size() int { return *sizeMiB << 20 }

var (
	plainOnce sync.Once
	plain     []byte
)

// plaintext is size() pseudo-random bytes, the same in every benchmark of
// a run.
func plaintext() []byte {
	plainOnce.Do(func() {
		plain = make([]byte, size())
		r := mrand.NewChaCha8([32]byte{'c', 'l', 'o', 'i', 's', 't', 'e', 'r'})
		r.Read(plain)
	})
	return plain
}

// cpuMeter adds up the CPU time of this process and of other processes
// (a registry) between start and stop, so that a benchmark can report
// throughput per CPU-second beside throughput per wall-second.
type cpuMeter struct {
	pids  []int
	from  time.Duration
	total time.Duration
}

func newCPUMeter(pids ...int) *cpuMeter {
	m := &cpuMeter{pids: pids}
	m.start()
	return m
}

func (m *cpuMeter) start() { m.from = cpuTime(m.pids) }
func (m *cpuMeter) stop()  { m.total += cpuTime(m.pids) - m.from }

// report stops the meter and reports cpu-MB/s and CPU milliseconds per
// operation.
func (m *cpuMeter) report(b *testing.B, bytesPerOp int) {
	m.stop()
	if m.total <= 0 {
		return
	}
	b.ReportMetric(float64(bytesPerOp)*float64(b.N)/m.total.Seconds()/1e6, "cpu-MB/s")
	b.ReportMetric(float64(m.total.Microseconds())/1e3/float64(b.N), "cpu-ms/op")
}

// cpuTime is the user and system time of this process (all threads) plus
// that of pids, read from /proc (in clock ticks of 10 ms).
func cpuTime(pids []int) time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	t := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which may hold spaces: state is
		// field 3, utime 14 and stime 15.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		t += time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
	}
	return t
}

// The AES-GCM baseline: STREAM over AES-256-GCM, as age does with
// ChaCha20-Poly1305 — 64 KiB chunks, each nonce holding the chunk counter
// and a last-chunk flag.
const gcmChunk = 64 << 10

func gcmNonce(nonce []byte, i uint64, last bool) {
	clear(nonce)
	binary.BigEndian.PutUint64(nonce[3:11], i)
	if last {
		nonce[11] = 1
	}
}

func gcmSeal(dst io.Writer, src []byte, aead cipher.AEAD) error {
	nonce := make([]byte, aead.NonceSize())
	buf := make([]byte, 0, gcmChunk+aead.Overhead())
	for i, off := uint64(0), 0; ; i++ {
		end := min(off+gcmChunk, len(src))
		last := end == len(src)
		gcmNonce(nonce, i, last)
		buf = aead.Seal(buf[:0], nonce, src[off:end], nil)
		if _, err := dst.Write(buf); err != nil {
			return err
		}
		if last {
			return nil
		}
		off = end
	}
}

func gcmOpen(dst io.Writer, src []byte, aead cipher.AEAD) error {
	nonce := make([]byte, aead.NonceSize())
	buf := make([]byte, 0, gcmChunk)
	n := gcmChunk + aead.Overhead()
	for i, off := uint64(0), 0; ; i++ {
		end := min(off+n, len(src))
		last := end == len(src)
		gcmNonce(nonce, i, last)
		var err error
		if buf, err = aead.Open(buf[:0], nonce, src[off:end], nil); err != nil {
			return err
		}
		if _, err := dst.Write(buf); err != nil {
			return err
		}
		if last {
			return nil
		}
		off = end
	}
}

func newGCM(tb testing.TB) cipher.AEAD {
	key := make([]byte, 32)
	rand.Read(key)
	c, err := aes.NewCipher(key)
	if err != nil {
		tb.Fatal(err)
	}
	aead, err := cipher.NewGCM(c)
	if err != nil {
		tb.Fatal(err)
	}
	return aead
}

// BenchmarkSeal: sealing size() bytes. "sealed" is package sealed as
// `cloister program seal` runs it (age's STREAM under a fresh content key,
// plus the SHA-256 of the plaintext and of the ciphertext); "age-x25519"
// is plain age to an X25519 recipient (no hashing); "aes-256-gcm" is the
// same chunking over AES-256-GCM (crypto/cipher); "sha256" is one SHA-256
// pass over the plaintext, the unit of the hashing sealed adds.
func BenchmarkSeal(b *testing.B) {
	pt := plaintext()
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	aead := newGCM(b)
	run := func(name string, seal func() error) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(pt)))
			m := newCPUMeter()
			for range b.N {
				if err := seal(); err != nil {
					b.Fatal(err)
				}
			}
			m.report(b, len(pt))
		})
	}
	run("sealed", func() error {
		_, _, err := sealed.Seal(io.Discard, bytes.NewReader(pt))
		return err
	})
	run("age-x25519", func() error {
		w, err := age.Encrypt(io.Discard, id.Recipient())
		if err != nil {
			return err
		}
		if _, err := w.Write(pt); err != nil {
			return err
		}
		return w.Close()
	})
	run("aes-256-gcm", func() error { return gcmSeal(io.Discard, pt, aead) })
	run("sha256", func() error {
		sha256.Sum256(pt)
		return nil
	})
}

// BenchmarkOpen: opening what BenchmarkSeal seals. "sealed" is
// `cloister program open`: every chunk authenticated and the plaintext's
// SHA-256 checked against the key file's.
func BenchmarkOpen(b *testing.B) {
	pt := plaintext()
	var sct bytes.Buffer
	key, sum, err := sealed.Seal(&sct, bytes.NewReader(pt))
	if err != nil {
		b.Fatal(err)
	}
	want := sha256.Sum256(pt)
	if sum.SHA256 != fmt.Sprintf("%x", want) {
		b.Fatal("seal summary")
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		b.Fatal(err)
	}
	var act bytes.Buffer
	w, _ := age.Encrypt(&act, id.Recipient())
	w.Write(pt)
	w.Close()
	aead := newGCM(b)
	var gct bytes.Buffer
	gcmSeal(&gct, pt, aead)
	// Each opener gives the plaintext back, byte for byte, once.
	check := func(name string, open func(io.Writer) error) {
		var out bytes.Buffer
		if err := open(&out); err != nil || !bytes.Equal(out.Bytes(), pt) {
			b.Fatalf("%s: opened %d bytes, %v", name, out.Len(), err)
		}
	}
	openers := []struct {
		name string
		open func(io.Writer) error
	}{
		{"sealed", func(w io.Writer) error {
			_, _, err := sealed.Open(w, bytes.NewReader(sct.Bytes()), key, &want)
			return err
		}},
		{"age-x25519", func(w io.Writer) error {
			r, err := age.Decrypt(bytes.NewReader(act.Bytes()), id)
			if err != nil {
				return err
			}
			_, err = io.Copy(w, r)
			return err
		}},
		{"aes-256-gcm", func(w io.Writer) error { return gcmOpen(w, gct.Bytes(), aead) }},
	}
	for _, o := range openers {
		check(o.name, o.open)
		b.Run(o.name, func(b *testing.B) {
			b.SetBytes(int64(len(pt)))
			m := newCPUMeter()
			for range b.N {
				if err := o.open(io.Discard); err != nil {
					b.Fatal(err)
				}
			}
			m.report(b, len(pt))
		})
	}
}

// target is a store the put and get benchmarks use, with the processes
// whose CPU time counts.
type target struct {
	name string
	repo string
	opts blob.Options
	pids []int
}

// targets starts a real registry (Debian's docker-registry) and a Cloister
// store served on loopback as `cloister node --blob-listen` serves it.
func targets(b *testing.B) []target {
	reg := registrytest.Run(b)
	big := int64(1) << 40
	st := registrytest.StartStore(b, server.Options{Limits: server.Limits{MaxBlob: big, MaxTotal: big, DefaultQuota: big}})
	return []target{
		{name: "registry", repo: reg.URL + "/bench/blobs", pids: []int{reg.Pid}},
		{name: "cloister-store", repo: st.URL + "/bench/blobs", opts: blob.Options{Key: st.Key}},
	}
}

// BenchmarkPut: `cloister blob put` of a file of size() bytes (hashed,
// then uploaded, then its manifest), a different blob each time.
func BenchmarkPut(b *testing.B) {
	pt := plaintext()
	ctx := context.Background()
	for _, tg := range targets(b) {
		b.Run(tg.name, func(b *testing.B) {
			s, err := blob.OpenStore(tg.repo, tg.opts)
			if err != nil {
				b.Fatal(err)
			}
			path := filepath.Join(b.TempDir(), "blob")
			b.SetBytes(int64(len(pt)))
			m := newCPUMeter(tg.pids...)
			for i := range b.N {
				b.StopTimer()
				m.stop()
				binary.BigEndian.PutUint64(pt, uint64(time.Now().UnixNano())+uint64(i)) // a blob no store has
				if err := os.WriteFile(path, pt, 0o600); err != nil {
					b.Fatal(err)
				}
				want := blob.FromBytes(pt)
				m.start()
				b.StartTimer()
				d, n, err := s.PushFile(ctx, path)
				if err != nil || d != want || n != int64(len(pt)) {
					b.Fatalf("put: %s %d %v", d, n, err)
				}
			}
			m.report(b, len(pt))
		})
	}
}

// discard is a sink that keeps nothing.
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) Commit() error               { return nil }
func (discard) Abort()                      {}

// BenchmarkGet: fetching a blob of size() bytes through a Location (the
// digest checked as it arrives), into memory that keeps nothing ("mem":
// the network and the hashing), and into a file through the atomic writer
// with fsync, as `cloister blob get` and the node's cache do ("file").
func BenchmarkGet(b *testing.B) {
	pt := plaintext()
	ctx := context.Background()
	d := blob.FromBytes(pt)
	for _, tg := range targets(b) {
		s, err := blob.OpenStore(tg.repo, tg.opts)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.PushBlob(ctx, d, int64(len(pt)), bytes.NewReader(pt)); err != nil {
			b.Fatal(err)
		}
		loc := blob.Location{s}
		dir := b.TempDir()
		for _, sink := range []string{"mem", "file"} {
			b.Run(tg.name+"/"+sink, func(b *testing.B) {
				b.SetBytes(int64(len(pt)))
				m := newCPUMeter(tg.pids...)
				for i := range b.N {
					path := filepath.Join(dir, strconv.Itoa(i))
					_, n, err := loc.Fetch(ctx, d, 0, func(int64) (blob.Sink, error) {
						if sink == "mem" {
							return discard{}, nil
						}
						return atomicfile.Create(path, 0o600)
					})
					if err != nil || n != int64(len(pt)) {
						b.Fatalf("get: %d bytes, %v", n, err)
					}
					if sink == "file" {
						b.StopTimer()
						m.stop()
						if fi, err := os.Stat(path); err != nil || fi.Size() != int64(len(pt)) {
							b.Fatalf("fetched file: %v", err)
						}
						os.Remove(path)
						m.start()
						b.StartTimer()
					}
				}
				m.report(b, len(pt))
			})
		}
	}
}

// harnessEnv marks the re-executed test binary of TestHarness.
const harnessEnv = "CLOISTER_STORAGE_BENCH_HARNESS"

// TestHarness runs every benchmark of this package once, at 1 MiB, in a
// process of its own (the test binary re-executed), so that the harness
// cannot rot: each must run, and report MB/s and cpu-MB/s.
func TestHarness(t *testing.T) {
	if os.Getenv(harnessEnv) != "" {
		t.Skip("inside the harness run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$", "-test.bench=.", "-test.benchtime=1x", "-storage.mib=1")
	cmd.Env = append(os.Environ(), harnessEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("benchmarks: %v\n%s", err, out)
	}
	want := []string{"Seal/sealed", "Seal/age-x25519", "Seal/aes-256-gcm", "Seal/sha256", "Open/sealed", "Open/age-x25519", "Open/aes-256-gcm"}
	// Put and Get need the registry beside the Cloister store
	// (scripts/test installs it; registrytest skips without it).
	if _, err := exec.LookPath(registrytest.Binary); err == nil {
		want = append(want, "Put/registry", "Put/cloister-store", "Get/registry/mem", "Get/registry/file",
			"Get/cloister-store/mem", "Get/cloister-store/file")
	}
	for _, name := range want {
		found := false
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, "Benchmark"+name+"-") || strings.HasPrefix(line, "Benchmark"+name+" ") {
				if !strings.Contains(line, " MB/s") || !strings.Contains(line, " cpu-MB/s") {
					t.Errorf("%s reports no throughput: %s", name, line)
				}
				found = true
			}
		}
		if !found {
			t.Errorf("benchmark %s did not run:\n%s", name, out)
		}
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("the benchmarks did not finish within 10 minutes")
	}
}
