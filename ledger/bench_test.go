package ledger

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/ledger/verify"
)

// presign makes n entries from a few keys before the clock starts:
// signing is the submitters' cost, not the ledger's.
func presign(b *testing.B, n int) []*verify.SignedEntry {
	keys := make([]ed25519.PrivateKey, 16)
	for i := range keys {
		keys[i] = newTestKey(b)
	}
	out := make([]*verify.SignedEntry, n)
	for i := range out {
		out[i] = signEntry(b, keys[i%len(keys)], KindNote, map[string]any{"i": i, "text": "a typical short note of some fifty bytes of payload"})
	}
	return out
}

// appendAll appends the entries with the given number of concurrent
// submitters and reports entries/s and commit latency percentiles.
func appendAll(b *testing.B, a Appender, entries []*verify.SignedEntry, submitters int) {
	var next atomic.Int64
	lat := make([]time.Duration, len(entries))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for range submitters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(entries) {
					return
				}
				t0 := time.Now()
				if _, err := a.Append(ctx, entries[i]); err != nil {
					failed.Store(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	slices.Sort(lat)
	b.ReportMetric(float64(len(entries))/el.Seconds(), "entries/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}

// BenchmarkEmbeddedAppend: one validator, 1024 concurrent submitters
// through Append (signature checks, bbolt commit per block, fsync).
func BenchmarkEmbeddedAppend(b *testing.B) {
	e := openTestEmbedded(b, b.TempDir())
	defer e.Close()
	entries := presign(b, max(b.N, 2000))
	h0, _ := e.ln.app.state()
	appendAll(b, e, entries, 1024)
	h1, _ := e.ln.app.state()
	b.ReportMetric(float64(len(entries))/float64(h1.Height-h0.Height), "entries/block")
}

// BenchmarkEmbeddedHTTPBatch: one validator, clients posting batches of
// 100 entries to POST /v1/entries/batch over loopback HTTP.
func BenchmarkEmbeddedHTTPBatch(b *testing.B) {
	e := openTestEmbedded(b, b.TempDir())
	defer e.Close()
	srv := httptest.NewServer(e.Handler())
	defer srv.Close()
	entries := presign(b, max(b.N, 2000))
	appendAll(b, &httpBatcher{url: srv.URL, size: 100}, entries, 2000)
}

// httpBatcher collects concurrent Append calls into batch requests.
type httpBatcher struct {
	url  string
	size int
	mu   sync.Mutex
	cur  *batchCall
}

type batchCall struct {
	txs  [][]byte
	done chan struct{}
	res  []json.RawMessage
	err  error
}

func (h *httpBatcher) Append(ctx context.Context, e *verify.SignedEntry) (verify.Receipt, error) {
	h.mu.Lock()
	c := h.cur
	if c == nil {
		c = &batchCall{done: make(chan struct{})}
		h.cur = c
		time.AfterFunc(2*time.Millisecond, func() { h.flush(c) })
	}
	i := len(c.txs)
	c.txs = append(c.txs, e.Encode())
	full := len(c.txs) >= h.size
	h.mu.Unlock()
	if full {
		h.flush(c)
	}
	<-c.done
	if c.err != nil {
		return verify.Receipt{}, c.err
	}
	var r receiptJSON
	var ej errorJSON
	if json.Unmarshal(c.res[i], &ej) == nil && ej.Code != "" {
		return verify.Receipt{}, &verify.RejectedError{Code: ej.Code, Reason: ej.Error}
	}
	if err := json.Unmarshal(c.res[i], &r); err != nil {
		return verify.Receipt{}, err
	}
	return verify.Receipt{Index: r.Index, Height: r.Height}, nil
}

func (h *httpBatcher) flush(c *batchCall) {
	h.mu.Lock()
	if h.cur != c {
		h.mu.Unlock()
		return
	}
	h.cur = nil
	h.mu.Unlock()
	defer close(c.done)
	var body bytes.Buffer
	body.WriteString(`{"entries":[`)
	for i, tx := range c.txs {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(tx)
	}
	body.WriteString(`]}`)
	res, err := http.Post(h.url+"/v1/entries/batch", "application/json", &body)
	if err != nil {
		c.err = err
		return
	}
	defer res.Body.Close()
	var out struct {
		Results []json.RawMessage `json:"results"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || len(out.Results) != len(c.txs) {
		c.err = fmt.Errorf("batch response: status %d, %v", res.StatusCode, err)
		return
	}
	c.res = out.Results
}

// BenchmarkEmbeddedLatency: one submitter at a time, the commit latency
// of a lone entry.
func BenchmarkEmbeddedLatency(b *testing.B) {
	e := openTestEmbedded(b, b.TempDir())
	defer e.Close()
	entries := presign(b, min(b.N, 500))
	appendAll(b, e, entries, 1)
}

// BenchmarkFourValidatorsAppend: four validators in this process on
// loopback, submitters spread over them.
func BenchmarkFourValidatorsAppend(b *testing.B) {
	homes, err := GenerateTestnet(b.TempDir(), 4, TestnetOptions{ChainID: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	vs := make([]*Validator, 4)
	for i, h := range homes {
		if vs[i], err = StartValidator(context.Background(), h.Home, StartOptions{Logger: testLogger(b)}); err != nil {
			b.Fatal(err)
		}
		defer vs[i].Close()
	}
	entries := presign(b, max(b.N, 4000))
	h0, _ := vs[0].ln.app.state()
	appendAll(b, &roundRobin{vs: vs}, entries, 1024)
	h1, _ := vs[0].ln.app.state()
	b.ReportMetric(float64(len(entries))/float64(h1.Height-h0.Height), "entries/block")
}

type roundRobin struct {
	vs []*Validator
	n  atomic.Int64
}

func (r *roundRobin) Append(ctx context.Context, e *verify.SignedEntry) (verify.Receipt, error) {
	return r.vs[int(r.n.Add(1))%len(r.vs)].Append(ctx, e)
}

// BenchmarkFourValidatorProcesses: four validator processes on loopback,
// clients posting batches of 100 to all four APIs over HTTP.
func BenchmarkFourValidatorProcesses(b *testing.B) {
	pn := startProcNet(b, 4)
	defer func() {
		for _, p := range pn.procs {
			p.stop()
		}
	}()
	var batchers []*httpBatcher
	for _, h := range pn.homes {
		batchers = append(batchers, &httpBatcher{url: h.APIURL, size: 100})
	}
	entries := presign(b, max(b.N, 4000))
	st0, err := pn.status(0)
	if err != nil {
		b.Fatal(err)
	}
	appendAll(b, &spread{bs: batchers}, entries, 2000)
	st1, err := pn.status(0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(entries))/float64(st1.Height-st0.Height), "entries/block")
}

type spread struct {
	bs []*httpBatcher
	n  atomic.Int64
}

func (s *spread) Append(ctx context.Context, e *verify.SignedEntry) (verify.Receipt, error) {
	return s.bs[int(s.n.Add(1))%len(s.bs)].Append(ctx, e)
}

// BenchmarkCheckpointLag: on an idle embedded ledger, the time from an
// entry's receipt to the stored cosigned checkpoint that covers it.
func BenchmarkCheckpointLag(b *testing.B) {
	e := openTestEmbedded(b, b.TempDir())
	defer e.Close()
	entries := presign(b, min(b.N, 200))
	lags := make([]time.Duration, len(entries))
	ctx := context.Background()
	b.ResetTimer()
	for i, se := range entries {
		rc, err := e.Append(ctx, se)
		if err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		for {
			if st, _ := e.ln.app.state(); st.HasCheckpoint && st.CheckpointSize > rc.Index {
				break
			}
			if time.Since(t0) > 30*time.Second {
				b.Fatalf("no checkpoint covering entry %d within 30s", rc.Index)
			}
			time.Sleep(time.Millisecond)
		}
		lags[i] = time.Since(t0)
	}
	b.StopTimer()
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "p99-ms")
}
