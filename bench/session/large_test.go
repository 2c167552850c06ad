package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/bench/internal/measure"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/examples"
	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/node"
	"github.com/cloisterhq/cloister/policy"
)

// BenchmarkLargeSession: large data through a whole session on loopback —
// the input sealed as it is read and streamed in chunks (client), kept as
// a sealed file and authenticated at the commit (node), decrypted by the
// worker as the guest reads it, the output sealed to a file and fetched
// in chunks. The node runs in this process with the client (so its peak
// RSS bounds the node's); the worker is a child. Per case: MB/s of
// seal+upload+open (from the first byte read to the commit's answer),
// the run's seconds, MB/s of the fetch, this process's and the worker's
// peak RSS, and the CPU time of this process and of the worker.
//
//	go test ./bench/session -run '^$' -bench LargeSession -benchtime 1x -count 3
//
// 2GiB-digest: 2 GiB in, examples/sha256sum (64 MiB of guest memory), a
// digest out. 1GiB-copy: 1 GiB in, a guest copying it to a 1 GiB output
// (the policy's largest max_output), fetched as a stream. 2GiB-upload:
// the upload of 2GiB-digest alone (no run), which is quick to repeat.
//
// The input's own SHA-256 (to check the copy's output) is computed from
// a second generation of the same pseudo-random bytes after the session,
// so that neither the upload's time nor its CPU carries the benchmark's
// bookkeeping.
func BenchmarkLargeSession(b *testing.B) {
	digest, err := examples.Lookup("sha256sum")
	if err != nil {
		b.Fatal(err)
	}
	copyGuest := measure.BuildGuest(b, "./testdata/copy")
	for _, c := range []struct {
		name, program, input, output, maxOutput string
		size                                    int64
		wasm                                    []byte
		uploadOnly                              bool
	}{
		{"2GiB-digest", "sha256sum.wasm", "big.bin", "sha256.json", "1MiB", 2 << 30, digest.Wasm, false},
		{"1GiB-copy", "copy.wasm", "in", "out", "1GiB", 1 << 30, copyGuest, false},
		{"2GiB-upload", "sha256sum.wasm", "big.bin", "sha256.json", "1MiB", 2 << 30, digest.Wasm, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			dir := b.TempDir()
			rt, err := isolate.New(context.Background(), isolate.Options{DataDir: dir, WorkerBinary: workerBinary})
			if err != nil {
				b.Fatal(err)
			}
			defer rt.Close()
			// Compile once into the cache, not timed.
			if res, err := rt.Run(context.Background(), &isolate.Config{Module: c.wasm, Memory: 64 << 20, Timeout: 10 * time.Minute,
				Inputs: []isolate.Input{{Name: c.input, Data: []byte("x")}}}); err != nil {
				b.Fatal(err)
			} else {
				res.Close()
			}
			n, err := node.New(context.Background(), node.Options{DataDir: filepath.Join(dir, "node"), Runner: rt,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go n.Serve(ln)
			cl, err := client.Dial(context.Background(), "https://"+ln.Addr().String(), client.WithPlatformKeys(n.PlatformKey()))
			if err != nil {
				b.Fatal(err)
			}
			defer cl.Close()
			parties := map[string]*keys.PrivateKey{}
			for _, id := range []string{"alice", "bob", "dave"} {
				if parties[id], err = keys.Generate(); err != nil {
					b.Fatal(err)
				}
			}
			pr := func(id, role string) map[string]any {
				pub := parties[id].Public()
				return map[string]any{"id": id, "signing_key": pub.SigningString(), "sealing_key": pub.SealingString(), "roles": []string{role}}
			}
			sum := sha256.Sum256(c.wasm)
			doc, _ := json.Marshal(map[string]any{
				"version": 1, "name": "bench-large",
				"principals": []any{pr("alice", "program-provider"), pr("bob", "data-provider"), pr("dave", "result-reader")},
				"programs":   []any{map[string]any{"name": c.program, "sha256": hex.EncodeToString(sum[:]), "provider": "alice"}},
				"inputs":     []any{map[string]any{"name": c.input, "provider": "bob"}},
				"outputs":    []any{map[string]any{"name": c.output, "readers": []string{"dave"}}},
				"isolates":   []any{map[string]any{"class": "software", "platform_keys": []string{keys.FormatSigningKey(n.PlatformKey())}}},
				"limits":     map[string]any{"memory": "64MiB", "timeout": "10m", "max_output": c.maxOutput},
				"expires":    time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339),
			})
			pol, err := policy.Parse(doc)
			if err != nil {
				b.Fatal(err)
			}
			var up, run, fetch, self, worker time.Duration
			var peakSelf, peakWorker int64
			b.SetBytes(c.size)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
				s := measure.StartRSS(os.Getpid(), 100*time.Millisecond)
				cpu0 := measure.SelfCPU()
				id, err := cl.CreateSession(ctx, doc)
				if err != nil {
					b.Fatal(err)
				}
				as, err := cl.Attest(ctx, id, pol)
				if err != nil {
					b.Fatal(err)
				}
				// Upload-only: no program, so that no run starts.
				if !c.uploadOnly {
					if _, err := as.UploadProgram(ctx, parties["alice"], c.program, c.wasm); err != nil {
						b.Fatal(err)
					}
				}
				src := newSource(i, c.size)
				t0 := time.Now()
				if _, err := as.UploadInputStream(ctx, parties["bob"], c.input, src, c.size); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if c.uploadOnly {
					self += measure.SelfCPU() - cpu0
					peaks := s.Stop()
					ps, _ := measure.Of(peaks, os.Getpid())
					peakSelf = max(peakSelf, ps)
					as.Close(ctx, parties["dave"])
					as.CloseIdleConnections()
					cancel()
					up += t1.Sub(t0)
					continue
				}
				st, err := as.Wait(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if !strings.HasSuffix(st.State.String(), "FINISHED") {
					b.Fatalf("session %s: %s", st.State, st.Reason)
				}
				t2 := time.Now()
				out := sha256.New()
				got, err := as.ResultTo(ctx, parties["dave"], c.output, out)
				if err != nil {
					b.Fatal(err)
				}
				t3 := time.Now()
				self += measure.SelfCPU() - cpu0
				peaks := s.Stop()
				worker += measure.ChildrenCPU(peaks, os.Getpid())
				ps, pw := measure.Of(peaks, os.Getpid())
				peakSelf, peakWorker = max(peakSelf, ps), max(peakWorker, pw)
				if c.output == "out" {
					h := sha256.New()
					io.Copy(h, newSource(i, c.size))
					in := hex.EncodeToString(h.Sum(nil))
					if got != c.size || hex.EncodeToString(out.Sum(nil)) != in {
						b.Fatalf("fetched %d bytes with SHA-256 %x, want %d with %s", got, out.Sum(nil), c.size, in)
					}
				}
				as.Close(ctx, parties["dave"])
				as.CloseIdleConnections()
				cancel()
				up += t1.Sub(t0)
				run += t2.Sub(t1)
				fetch += t3.Sub(t2)
			}
			b.StopTimer()
			nf := float64(b.N)
			mb := float64(c.size) / 1e6
			b.ReportMetric(mb*nf/up.Seconds(), "upload-MB/s")
			b.ReportMetric(float64(peakSelf)/(1<<20), "node+client-peak-MiB")
			b.ReportMetric(self.Seconds()/nf, "node+client-cpu-s")
			if c.uploadOnly {
				return
			}
			b.ReportMetric(run.Seconds()/nf, "run-s")
			if c.output == "out" {
				b.ReportMetric(mb*nf/fetch.Seconds(), "fetch-MB/s")
			}
			b.ReportMetric(float64(peakWorker)/(1<<20), "worker-peak-MiB")
			b.ReportMetric(worker.Seconds()/nf, "worker-cpu-s")
		})
	}
}

// source gives n bytes cycling through a pseudo-random block made before
// the clock starts: it stands for a file in the page cache, whose read
// costs a copy. (Generating the bytes as they are read, with ChaCha8,
// cost 1.5 s of CPU per 2 GiB inside the timed upload, which no user's
// upload pays; the content does not matter to the path measured, since
// the client seals it before anything else sees it.)
type source struct {
	block []byte
	off   int
	n     int64
}

// sourceBlock is the period of a source; small, because the process's
// peak RSS stands for the node's.
const sourceBlock = 4<<20 + 4093

func newSource(seed int, n int64) *source {
	block := make([]byte, sourceBlock)
	rand.NewChaCha8([32]byte{byte(seed)}).Read(block)
	return &source{block: block, n: n}
}

func (s *source) Read(p []byte) (int, error) {
	if s.n == 0 {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), s.n)]
	done := 0
	for done < len(p) {
		c := copy(p[done:], s.block[s.off:])
		done += c
		s.off = (s.off + c) % len(s.block)
	}
	s.n -= int64(len(p))
	return len(p), nil
}
