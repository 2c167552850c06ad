package ledgerbench

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// BenchmarkCommit measures entries committed per second, each entry's
// signature checked by the state machine (CheckTx, and FinalizeBlock for
// entries it has not seen), one operation being one entry from submit to
// receipt. Run it with -benchtime=20000x (10000x for the testnets): every
// sub-benchmark starts from a running ledger and needs thousands of
// entries to reach a steady state.
//
//   - embedded: one validator (ledger.OpenEmbedded) in this process;
//   - 4-validators-inprocess: ledger.GenerateTestnet + StartValidator for
//     four validators in this process, on loopback;
//   - 4-validators-processes: the same, each validator in its own process
//     (this test binary re-executed), reached over HTTP only.
//
// Submitters: append-cN calls Append in process from N goroutines (N
// entries in flight: 256, 1024 and 4096 show where more concurrency stops
// helping, i.e. where the ledger is the bottleneck); http-c1024 posts one
// entry per request (POST /v1/entries) from 1024 goroutines;
// http-batch500-c8 posts batches of 500 (POST /v1/entries/batch, waiting
// for the commit) from 8 goroutines, -c16 from 16. With several validators, submitters
// are spread over all of them. Entries are signed before the clock starts.
// A -batchN suffix: the same with entries batch-signed, N under one
// signature (rule version 18, decision 0175).
func BenchmarkCommit(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		e := openEmbedded(b, b.TempDir())
		defer e.close()
		s := newSigners(b, 64)
		for _, c := range []int{256, 1024, 4096} {
			b.Run(fmt.Sprintf("append-c%d", c), func(b *testing.B) {
				throughput(b, s, e.c, cpuTime, appendOne{[]ledger.Appender{e.l}}, c)
			})
		}
		b.Run("http-c1024", func(b *testing.B) {
			throughput(b, s, e.c, cpuTime, appendOne{[]ledger.Appender{e.c}}, 1024)
		})
		b.Run("http-batch500-c8", func(b *testing.B) {
			throughput(b, s, e.c, cpuTime, appendBatch{[]*client.Client{e.c}, 500}, 8)
		})
		b.Run("http-batch500-c16", func(b *testing.B) {
			throughput(b, s, e.c, cpuTime, appendBatch{[]*client.Client{e.c}, 500}, 16)
		})
		for _, n := range []int{16, 64} {
			bs := s.batched(n)
			b.Run(fmt.Sprintf("append-c1024-batch%d", n), func(b *testing.B) {
				throughput(b, bs, e.c, cpuTime, appendOne{[]ledger.Appender{e.l}}, 1024)
			})
			b.Run(fmt.Sprintf("http-batch500-c8-batch%d", n), func(b *testing.B) {
				throughput(b, bs, e.c, cpuTime, appendBatch{[]*client.Client{e.c}, 500}, 8)
			})
			b.Run(fmt.Sprintf("http-batch500-c16-batch%d", n), func(b *testing.B) {
				throughput(b, bs, e.c, cpuTime, appendBatch{[]*client.Client{e.c}, 500}, 16)
			})
		}
	})
	b.Run("4-validators-inprocess", func(b *testing.B) {
		if testing.Short() {
			b.Skip("starts a four-validator testnet; skipped under -short")
		}
		t := startTestnet(b, b.TempDir(), 4, false)
		s := newSigners(b, 64)
		b.Run("append-c1024", func(b *testing.B) {
			throughput(b, s, t.clients[0], t.cpu, appendOne{t.appenders()}, 1024)
		})
		b.Run("http-batch500-c8", func(b *testing.B) {
			throughput(b, s, t.clients[0], t.cpu, appendBatch{t.clients, 500}, 8)
		})
	})
	b.Run("4-validators-processes", func(b *testing.B) {
		if testing.Short() {
			b.Skip("starts a four-validator testnet; skipped under -short")
		}
		t := startTestnet(b, b.TempDir(), 4, true)
		s := newSigners(b, 64)
		clients := make([]ledger.Appender, len(t.clients))
		for i, c := range t.clients {
			clients[i] = c
		}
		b.Run("http-c1024", func(b *testing.B) {
			throughput(b, s, t.clients[0], t.cpu, appendOne{clients}, 1024)
		})
		b.Run("http-batch500-c8", func(b *testing.B) {
			throughput(b, s, t.clients[0], t.cpu, appendBatch{t.clients, 500}, 8)
		})
		b.Run("http-batch500-c8-batch16", func(b *testing.B) {
			throughput(b, s.batched(16), t.clients[0], t.cpu, appendBatch{t.clients, 500}, 8)
		})
	})
}

// throughput commits b.N fresh entries and reports entries/s and the
// submit-to-receipt latency each entry saw (for batches, its batch's).
func throughput(b *testing.B, s *signers, stat *client.Client, cpu func() time.Duration, sub submitter, workers int) {
	entries := s.sign(b, b.N)
	st0, err := stat.Status(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer() // (also drops metrics reported so far)
	cpu0 := cpu()
	res := commitAll(b, sub, entries, workers)
	used := cpu() - cpu0
	b.StopTimer()
	b.ReportMetric(res.rate(), "entries/s")
	b.ReportMetric(txBytes(entries), "tx-bytes")
	b.ReportMetric(float64(used.Microseconds())/float64(b.N), "cpu-µs/entry")
	if st1, err := stat.Status(context.Background()); err == nil && st1.Height > st0.Height {
		b.ReportMetric(float64(b.N)/float64(st1.Height-st0.Height), "entries/block")
	}
	reportLatency(b, res.lat)
}

// cpuTime is the CPU time (user + system) this process has used so far.
// Per entry (cpu-µs/entry: the submitters' and all validators' CPU, the
// validator processes' included), it says what throughput the machine's
// cores could give if nothing else ran, which a shared machine's
// entries/s alone cannot.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLatency measures the commit latency of one entry at a time, from
// submit to committed receipt, on an idle ledger and under background
// load: 1000 or 4000 entries/s offered at a steady rate, or 128 submitters
// appending back to back (saturation). Operation = one probe entry; run
// with -benchtime=300x. bg-entries/s is the load the ledger actually
// committed meanwhile.
func BenchmarkLatency(b *testing.B) {
	b.Run("embedded", func(b *testing.B) {
		e := openEmbedded(b, b.TempDir())
		defer e.close()
		s := newSigners(b, 64)
		b.Run("idle/append", func(b *testing.B) { latency(b, s, e.l, nil) })
		b.Run("idle/http", func(b *testing.B) { latency(b, s, e.c, nil) })
		b.Run("load-1000per-s/append", func(b *testing.B) {
			latency(b, s, e.l, func() *load { return startLoad(b, e.l, s, 1000, 0) })
		})
		// About half the single validator's peak on this machine with
		// in-process submitters (docs/performance.md).
		b.Run("load-4000per-s/append", func(b *testing.B) {
			latency(b, s, e.l, func() *load { return startLoad(b, e.l, s, 4000, 0) })
		})
		b.Run("load-saturated-c128/append", func(b *testing.B) {
			latency(b, s, e.l, func() *load { return startLoad(b, e.l, s, 0, 128) })
		})
		// Half the peak measured just before, in the same run and on the
		// same machine: issue 22's "commit p50 at half the peak load".
		b.Run("load-half-peak/append", func(b *testing.B) {
			peak := startLoad(b, e.l, s, 0, 1024)
			time.Sleep(5 * time.Second)
			rate := peak.finish(b)
			latency(b, s, e.l, func() *load { return startLoad(b, e.l, s, int(rate/2), 0) })
			b.ReportMetric(rate, "peak-entries/s") // after latency's ResetTimer, which drops metrics
		})
		// The same with the load batch-signed, 16 entries a signature
		// (decision 0175): its higher peak, and half of it.
		b.Run("load-half-peak-batch16/append", func(b *testing.B) {
			bs := s.batched(16)
			peak := startLoad(b, e.l, bs, 0, 1024)
			time.Sleep(5 * time.Second)
			rate := peak.finish(b)
			latency(b, s, e.l, func() *load { return startLoad(b, e.l, bs, int(rate/2), 0) })
			b.ReportMetric(rate, "peak-entries/s")
		})
	})
	b.Run("4-validators-inprocess", func(b *testing.B) {
		if testing.Short() {
			b.Skip("starts a four-validator testnet; skipped under -short")
		}
		t := startTestnet(b, b.TempDir(), 4, false)
		s := newSigners(b, 64)
		b.Run("idle/append", func(b *testing.B) { latency(b, s, t.inproc[0], nil) })
	})
}

func latency(b *testing.B, s *signers, a ledger.Appender, bg func() *load) {
	probes := s.sign(b, b.N)
	var l *load
	if bg != nil {
		l = bg()
	}
	lat := make([]time.Duration, b.N)
	ctx := context.Background()
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		rc, err := a.Append(ctx, probes[i])
		lat[i] = time.Since(t0)
		if err != nil {
			b.Fatal(err)
		}
		if rc.LeafHash != verify.LeafHash(probes[i].Encode()) {
			b.Fatalf("probe %d: receipt for another entry", i)
		}
	}
	b.StopTimer()
	reportLatency(b, lat)
	if l != nil {
		b.ReportMetric(l.finish(b), "bg-entries/s")
	}
}

// load appends entries in the background: at a steady offered rate
// (open loop, each entry in its own goroutine, at most 4096 in flight), or
// from a number of submitters back to back (closed loop). Entries are
// signed ahead, a pool at a time, so that signing weighs on the
// measurement as little as possible.
type load struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	done  atomic.Int64
	err   atomic.Value
	start time.Time
	feed  chan *verify.SignedEntry
}

func startLoad(tb testing.TB, a ledger.Appender, s *signers, rate, workers int) *load {
	l := &load{stop: make(chan struct{}), feed: make(chan *verify.SignedEntry, 100_000)}
	pool := 20_000
	if rate == 0 {
		pool = 60_000
	}
	for _, e := range s.sign(tb, pool) {
		l.feed <- e
	}
	// Refill when the pool runs low (long runs only).
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		for {
			select {
			case <-l.stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
			if len(l.feed) < pool/4 {
				more, err := s.signErr(pool / 2)
				if err != nil {
					l.err.Store(err)
					return
				}
				for _, e := range more {
					l.feed <- e
				}
			}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-l.stop; cancel() }()
	one := func(e *verify.SignedEntry) {
		if _, err := a.Append(ctx, e); err != nil {
			if ctx.Err() == nil {
				l.err.Store(err)
			}
			return
		}
		l.done.Add(1)
	}
	next := func() *verify.SignedEntry {
		select {
		case e := <-l.feed:
			return e
		case <-l.stop:
			return nil
		}
	}
	l.start = time.Now()
	if rate == 0 {
		for range workers {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for e := next(); e != nil; e = next() {
					one(e)
				}
			}()
		}
	} else {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			const tick = 10 * time.Millisecond
			per := rate * int(tick) / int(time.Second)
			sem := make(chan struct{}, 4096)
			t := time.NewTicker(tick)
			defer t.Stop()
			for {
				select {
				case <-l.stop:
					return
				case <-t.C:
				}
				for range per {
					e := next()
					if e == nil {
						return
					}
					select {
					case sem <- struct{}{}:
					case <-l.stop:
						return
					}
					l.wg.Add(1)
					go func() {
						defer func() { <-sem; l.wg.Done() }()
						one(e)
					}()
				}
			}
		}()
	}
	// Let the load reach its steady state before the probes start.
	time.Sleep(time.Second)
	return l
}

// finish stops the load and returns the rate it was committed at.
func (l *load) finish(tb testing.TB) float64 {
	el := time.Since(l.start)
	n := l.done.Load()
	close(l.stop)
	l.wg.Wait()
	if err, _ := l.err.Load().(error); err != nil {
		tb.Fatalf("background load: %v", err)
	}
	return float64(n) / el.Seconds()
}
