package node_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/api/cloister/v1/cloisterv1connect"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/node"
)

// startServedNode opens a node over dir and serves it with Serve, under
// the listener limits lim: what a node started by 'cloister node' does.
func startServedNode(t testing.TB, dir string, lim node.Limits) *testNode {
	t.Helper()
	opts := testOptions(t, dir)
	opts.Limits = lim
	return serveNode(t, opts)
}

// serveNode opens a node with opts and serves it with Serve on 127.0.0.1.
func serveNode(t testing.TB, opts node.Options) *testNode {
	t.Helper()
	n, err := node.New(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	go n.Serve(ln)
	tn := &testNode{Node: n, dir: opts.DataDir, url: "https://" + ln.Addr().String(), ln: ln}
	t.Cleanup(tn.stop)
	return tn
}

// rawHTTP is a client that speaks to the node's port without any of the
// SDK's checks; sni picks the node or a session.
func rawHTTP(t testing.TB, sni string, h2 bool) *http.Client {
	t.Helper()
	protos := []string{"http/1.1"}
	if h2 {
		protos = []string{"h2"}
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: protos},
		ForceAttemptHTTP2: h2, DisableCompression: true,
	}}
	t.Cleanup(hc.CloseIdleConnections)
	return hc
}

// connectError is the body of a Connect-protocol error.
type connectError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// postRaw posts body to an RPC with the Connect protocol and returns the
// HTTP status and the error body (if any).
func postRaw(t testing.TB, hc *http.Client, url, proc string, body io.Reader, length int64, encoding string) (int, connectError) {
	t.Helper()
	req, err := http.NewRequest("POST", url+proc, body)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = length
	req.Header.Set("Content-Type", "application/proto")
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", proc, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var ce connectError
	json.Unmarshal(b, &ce)
	return resp.StatusCode, ce
}

// gzipBomb is a gzip stream of n zero bytes (about n/1000 bytes long).
func gzipBomb(t testing.TB, n int) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for left := n; left > 0; left -= len(zeros) {
		zw.Write(zeros[:min(left, len(zeros))])
	}
	zw.Close()
	return buf.Bytes()
}

// allocatedDuring returns the bytes the process allocated while f ran.
func allocatedDuring(f func()) uint64 {
	var before, after goruntime.MemStats
	goruntime.ReadMemStats(&before)
	f()
	goruntime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// A small compressed request that inflates to 256 MiB is refused by every
// RPC, anonymous or not, before the node inflates it: RPCs whose messages
// are small or incompressible take no compression at all, and
// CreateSession stops inflating at its ratio limit.
func TestAttackCompressedRequest(t *testing.T) {
	s := newScenario(t)
	tn, doc, c := s.nodeWithPolicy(t, nil)
	id, err := c.CreateSession(context.Background(), doc)
	if err != nil {
		t.Fatal(err)
	}
	big, small := gzipBomb(t, 256<<20), gzipBomb(t, 4<<20)
	t.Logf("%d bytes of gzip inflate to 256 MiB, %d to 4 MiB", len(big), len(small))
	for _, tc := range []struct {
		sni, proc  string
		bomb       []byte
		code, says string
	}{
		// Small RPCs: a bomb larger than their limit is refused by size
		// (TestAttackOversizedRequest), a smaller one for compression.
		{node.NodeServerName, cloisterv1connect.NodeServiceGetNodeInfoProcedure, small, "unimplemented", `rule "compression-ratio": GetNodeInfo takes no compressed requests`},
		{node.NodeServerName, cloisterv1connect.NodeServiceGetStatusProcedure, small, "unimplemented", `rule "compression-ratio"`},
		{node.NodeServerName, cloisterv1connect.NodeServiceCreateSessionProcedure, big, "resource_exhausted", `rule "compression-ratio": compressed request expands more than 16 times`},
		{protocol.ServerName(id), cloisterv1connect.SessionServiceUploadInputProcedure, big, "unimplemented", `rule "compression-ratio": UploadInput takes no compressed requests`},
		{protocol.ServerName(id), cloisterv1connect.SessionServiceAttestProcedure, small, "unimplemented", `rule "compression-ratio"`},
	} {
		bomb := tc.bomb
		hc := rawHTTP(t, tc.sni, true)
		var status int
		var ce connectError
		alloc := allocatedDuring(func() {
			status, ce = postRaw(t, hc, tn.url, tc.proc, bytes.NewReader(bomb), int64(len(bomb)), "gzip")
		})
		t.Logf("%s: %d %s %q; %d MiB allocated meanwhile", tc.proc, status, ce.Code, ce.Message, alloc>>20)
		if ce.Code != tc.code || !strings.Contains(ce.Message, tc.says) {
			t.Errorf("%s: %s %q; want %s mentioning %q", tc.proc, ce.Code, ce.Message, tc.code, tc.says)
		}
		// Far below the 256 MiB it would inflate to (the warm pool and
		// the test's own client allocate a little meanwhile).
		if alloc > 48<<20 {
			t.Errorf("%s: the process allocated %d MiB while refusing a %d-byte request", tc.proc, alloc>>20, len(bomb))
		}
	}
}

// A request body declared larger than its RPC's limit is refused before
// any of it is read; one that claims less but sends more is cut at the
// limit. The refusal names the limit.
func TestAttackOversizedRequest(t *testing.T) {
	tn := startNode(t, filepath.Join(t.TempDir(), "node"), nil)
	hc := rawHTTP(t, node.NodeServerName, true)
	// Declared 100 MiB, nothing sent: refused at once.
	pipe := func() io.Reader {
		pr, pw := io.Pipe()
		t.Cleanup(func() { pw.Close() })
		return pr
	}
	// Refused by rule request-size: a node that waited for the body
	// would end this one (which never comes) as a slow body instead.
	pr := pipe()
	status, ce := postRaw(t, hc, tn.url, cloisterv1connect.NodeServiceGetNodeInfoProcedure, pr, 100<<20, "")
	if status != http.StatusTooManyRequests && ce.Code != "resource_exhausted" || !strings.Contains(ce.Message, `rule "request-size"`) {
		t.Fatalf("declared 100 MiB: %d %s %q; want resource_exhausted by rule request-size", status, ce.Code, ce.Message)
	}
	// Undeclared length (chunked), 2 MiB sent to GetStatus: cut at the limit.
	status, ce = postRaw(t, rawHTTP(t, node.NodeServerName, false), tn.url, cloisterv1connect.NodeServiceGetStatusProcedure,
		io.LimitReader(zeroReader{}, 2<<20), -1, "")
	if ce.Code != "resource_exhausted" {
		t.Fatalf("undeclared 2 MiB: %d %s %q; want resource_exhausted", status, ce.Code, ce.Message)
	}
	// The policy limit for CreateSession, named in the refusal.
	status, ce = postRaw(t, hc, tn.url, cloisterv1connect.NodeServiceCreateSessionProcedure, pipe(), 8<<20, "")
	if ce.Code != "resource_exhausted" || !strings.Contains(ce.Message, "CreateSession request body is 8388608 bytes") {
		t.Fatalf("8 MiB create: %d %s %q", status, ce.Code, ce.Message)
	}
	// An upload over the upload limit names the flag that raises it.
	status, ce = postRaw(t, rawHTTP(t, protocol.ServerName(strings.Repeat("a", 32)), true), tn.url,
		cloisterv1connect.SessionServiceUploadInputProcedure, pipe(), node.DefaultMaxUploadBytes*2, "")
	if ce.Code != "resource_exhausted" || !strings.Contains(ce.Message, "--max-upload") {
		t.Fatalf("upload over the limit: %d %s %q", status, ce.Code, ce.Message)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// Headers, then one body byte every 500 ms: the node cuts the request off
// once the body falls behind the minimum pace, and it keeps serving.
func TestAttackSlowBody(t *testing.T) {
	lim := node.Limits{HTTP: httpguard.Limits{BodyTimeout: time.Second, MinBodyRate: 1024}}
	tn := startServedNode(t, filepath.Join(t.TempDir(), "node"), lim)
	for _, h2 := range []bool{false, true} {
		hc := rawHTTP(t, node.NodeServerName, h2)
		stop := make(chan struct{})
		body := &slowReader{every: 500 * time.Millisecond, stop: stop}
		start := time.Now()
		done := make(chan error, 1)
		go func() {
			req, _ := http.NewRequest("POST", tn.url+cloisterv1connect.NodeServiceCreateSessionProcedure, body)
			req.ContentLength = 64 << 10
			req.Header.Set("Content-Type", "application/proto")
			resp, err := hc.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			done <- err
		}()
		select {
		case err := <-done:
			t.Logf("h2=%v: cut off after %s: %v", h2, time.Since(start).Round(time.Millisecond), err)
		case <-time.After(15 * time.Second):
			t.Fatalf("h2=%v: a body arriving at 2 bytes/s was still being read after 15 s", h2)
		}
		close(stop)
	}
	if m := scrapeMetrics(t, tn); !strings.Contains(m, "cloister_slow_bodies_total 2\n") {
		t.Fatalf("metrics do not count the slow bodies:\n%s", m)
	}
	// Still serving.
	if _, err := dial(t, tn).NodeInfo(context.Background()); err != nil {
		t.Fatal(err)
	}
}

type slowReader struct {
	every time.Duration
	stop  chan struct{}
}

func (r *slowReader) Read(p []byte) (int, error) {
	select {
	case <-time.After(r.every):
	case <-r.stop:
		return 0, io.EOF
	}
	p[0] = 0x0a
	return 1, nil
}

// Connections over the node's caps are closed at accept, and counted.
func TestAttackConnectionFlood(t *testing.T) {
	lim := node.Limits{HTTP: httpguard.Limits{MaxConns: 8, MaxConnsPerAddr: 4}}
	tn := startServedNode(t, filepath.Join(t.TempDir(), "node"), lim)
	addr := strings.TrimPrefix(tn.url, "https://")
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	// Four idle TCP connections from 127.0.0.1 fill its share.
	for range 4 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		m := scrapeMetricsFrom(t, tn, "127.0.0.2")
		if strings.Contains(m, "cloister_connections_open 5\n") { // 4 held + this scrape
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the held connections are not counted:\n%s", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A fifth from 127.0.0.1 fails its handshake; other addresses are served.
	if _, err := dial(t, tn).NodeInfo(context.Background()); err == nil {
		t.Fatal("a fifth connection from one address was served (MaxConnsPerAddr 4)")
	}
	m := scrapeMetricsFrom(t, tn, "127.0.0.3")
	if !strings.Contains(m, `cloister_connections_refused_total{limit="max-conns-per-addr"} 1`+"\n") {
		t.Fatalf("refusal not counted:\n%s", m)
	}
}

// scrapeMetricsFrom reads /metrics over a connection from a given loopback
// source address.
func scrapeMetricsFrom(t *testing.T, tn *testNode, src string) string {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
	resp, err := hc.Get(tn.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Many large requests at once cannot ask for more memory than the
// in-flight budget: while one upload's declared bytes are held, another
// that would pass the budget is refused at once, naming the budget.
func TestAttackInflightBudget(t *testing.T) {
	lim := node.Limits{MaxUploadBytes: 4 << 20, MaxInflightBytes: 6 << 20}
	tn := startServedNode(t, filepath.Join(t.TempDir(), "node"), lim)
	sid := strings.Repeat("b", 32)
	hold := rawHTTP(t, protocol.ServerName(sid), false)
	stop := make(chan struct{})
	defer close(stop)
	started := make(chan struct{})
	go func() {
		// 4 MiB declared, arriving at 2 bytes/s: held until the body
		// deadline cuts it off.
		req, _ := http.NewRequest("POST", tn.url+cloisterv1connect.SessionServiceUploadInputProcedure,
			io.MultiReader(bytes.NewReader([]byte{0x0a}), &slowReader{every: 500 * time.Millisecond, stop: stop}))
		req.ContentLength = 4 << 20
		req.Header.Set("Content-Type", "application/proto")
		close(started)
		if resp, err := hold.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(scrapeMetrics(t, tn), "cloister_requests_inflight_bytes 4.194304e+06") {
		if time.Now().After(deadline) {
			t.Fatalf("the first upload is not counted in flight:\n%s", scrapeMetrics(t, tn))
		}
		time.Sleep(20 * time.Millisecond)
	}
	status, ce := postRaw(t, rawHTTP(t, protocol.ServerName(sid), true), tn.url, cloisterv1connect.SessionServiceUploadInputProcedure,
		io.LimitReader(zeroReader{}, 3<<20), 3<<20, "")
	if ce.Code != "resource_exhausted" || !strings.Contains(ce.Message, `rule "requests-in-flight"`) || !strings.Contains(ce.Message, "--max-inflight") {
		t.Fatalf("second upload: %d %s %q; want a refusal by rule requests-in-flight", status, ce.Code, ce.Message)
	}
	// Small requests still fit.
	if _, err := dial(t, tn).NodeInfo(context.Background()); err != nil {
		t.Fatal(err)
	}
}
