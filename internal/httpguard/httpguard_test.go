package httpguard

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

// testLimits are short enough for tests: a body gets 1 s, then must arrive
// at 1000 bytes/s.
var testLimits = Limits{BodyTimeout: time.Second, MinBodyRate: 1000, HeaderTimeout: time.Second,
	MaxConns: 4, MaxConnsPerAddr: 2}

// bodyServer serves, under NewServer and Listen, a handler that reads the
// whole body and reports what it read and how it ended.
type bodyServer struct {
	*httptest.Server
	st   *Stats
	done chan bodyResult
}

type bodyResult struct {
	n   int64
	err error
}

func newBodyServer(t *testing.T, h2 bool, l Limits) *bodyServer {
	t.Helper()
	bs := &bodyServer{st: new(Stats), done: make(chan bodyResult, 16)}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		bs.done <- bodyResult{n, err}
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestTimeout)
			return
		}
		fmt.Fprintf(w, "%d", n)
	})
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = NewServer(h, l, bs.st, nil)
	ts.Listener = Listen(ts.Listener, l, bs.st)
	if h2 {
		ts.EnableHTTP2 = true
		ts.StartTLS()
	} else {
		ts.Start()
	}
	t.Cleanup(ts.Close)
	bs.Server = ts
	return bs
}

// trickle is a body that sends one byte every interval, forever (until
// closed).
type trickle struct {
	every time.Duration
	stop  chan struct{}
}

func (tr *trickle) Read(p []byte) (int, error) {
	select {
	case <-time.After(tr.every):
	case <-tr.stop:
		return 0, io.EOF
	}
	p[0] = 'x'
	return 1, nil
}

func TestSlowBodyIsCutOff(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1", true: "http2"}[h2], func(t *testing.T) {
			t.Parallel()
			bs := newBodyServer(t, h2, testLimits)
			tr := &trickle{every: 300 * time.Millisecond, stop: make(chan struct{})}
			defer close(tr.stop)
			req, _ := http.NewRequest("POST", bs.URL, io.NopCloser(tr))
			req.ContentLength = 1 << 20 // declared large: the pace, not the length, decides
			go bs.Client().Do(req)
			select {
			case r := <-bs.done:
				var sb *SlowBodyError
				if !errors.As(r.err, &sb) {
					t.Fatalf("body ended with %v after %d bytes; want a SlowBodyError", r.err, r.n)
				}
				// Cut off by the rate, not by this test's patience (the
				// trickle never ends): no wall-clock bound.
				if !strings.Contains(sb.Error(), "1000 bytes/s") {
					t.Fatalf("error does not name the limit: %v", sb)
				}
			case <-time.After(time.Minute):
				t.Fatal("a body trickling one byte every 300 ms was still being read after a minute")
			}
			if got := bs.st.SlowBodies.Load(); got != 1 {
				t.Fatalf("SlowBodies = %d, want 1", got)
			}
		})
	}
}

// A body arriving faster than the minimum rate is read whole, however long
// it takes past BodyTimeout.
func TestSteadyBodyIsNotCutOff(t *testing.T) {
	t.Parallel()
	bs := newBodyServer(t, false, testLimits)
	pr, pw := io.Pipe()
	go func() {
		chunk := bytes.Repeat([]byte("y"), 500)
		for i := 0; i < 10; i++ { // 5000 bytes over ~2.5 s: 2000 bytes/s
			pw.Write(chunk)
			time.Sleep(250 * time.Millisecond)
		}
		pw.Close()
	}()
	req, _ := http.NewRequest("POST", bs.URL, pr)
	resp, err := bs.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := <-bs.done
	if r.err != nil || r.n != 5000 {
		t.Fatalf("read %d bytes, err %v; want 5000, nil", r.n, r.err)
	}
}

func TestSlowHeadersAreCutOff(t *testing.T) {
	t.Parallel()
	bs := newBodyServer(t, false, testLimits)
	c, err := net.Dial("tcp", bs.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		closed <- err
	}()
	for _, b := range []byte("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa") {
		select {
		case <-closed:
			return
		case <-time.After(200 * time.Millisecond):
		}
		c.Write([]byte{b})
	}
	t.Fatal("headers trickled for more than 10 s without the connection being closed")
}

// dialFrom connects from a given loopback source address.
func dialFrom(t *testing.T, src, dst string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", dst)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refused reports whether the server closed c without a word: a request
// sent on it gets no response.
func refused(c net.Conn) bool {
	c.SetDeadline(time.Now().Add(3 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	_, err := http.ReadResponse(bufio.NewReader(c), nil)
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

func served(t *testing.T, conns ...net.Conn) {
	t.Helper()
	for _, c := range conns {
		if refused(c) {
			t.Fatal("a connection within the caps was refused")
		}
	}
}

func TestConnectionCaps(t *testing.T) {
	t.Parallel()
	bs := newBodyServer(t, false, testLimits)
	addr := bs.Listener.Addr().String()
	// Two from 127.0.0.1 are served; a third from there is refused.
	a1 := dialFrom(t, "127.0.0.1", addr)
	served(t, a1, dialFrom(t, "127.0.0.1", addr))
	if !refused(dialFrom(t, "127.0.0.1", addr)) {
		t.Fatal("a third connection from one address was served (MaxConnsPerAddr 2)")
	}
	// Other addresses fill the total cap of 4; the fifth is refused.
	served(t, dialFrom(t, "127.0.0.2", addr), dialFrom(t, "127.0.0.3", addr))
	if !refused(dialFrom(t, "127.0.0.4", addr)) {
		t.Fatal("a fifth connection was served (MaxConns 4)")
	}
	if bs.st.RefusedAddr.Load() != 1 || bs.st.RefusedTotal.Load() != 1 {
		t.Fatalf("refused per address %d, in total %d; want 1 and 1", bs.st.RefusedAddr.Load(), bs.st.RefusedTotal.Load())
	}
	// Closing one frees its slot.
	a1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for bs.st.Open.Load() > 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still counted open after one closed", bs.st.Open.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if refused(dialFrom(t, "127.0.0.1", addr)) {
		t.Fatal("a connection was refused after a slot was freed")
	}
}

func TestNewServerHTTP2Streams(t *testing.T) {
	t.Parallel()
	bs := newBodyServer(t, true, Limits{MaxStreams: 7})
	tr := bs.Client().Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}}
	resp, err := bs.Client().Get(bs.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("served over %s, want HTTP/2", resp.Proto)
	}
	if got := bs.Config.HTTP2.MaxConcurrentStreams; got != 7 {
		t.Fatalf("MaxConcurrentStreams %d, want 7", got)
	}
}

// A client that stops reading its response cannot hold the handler: the
// write fails at WriteTimeout.
func TestSlowReaderIsCutOff(t *testing.T) {
	t.Parallel()
	done := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("z"), 64<<10)
		for i := 0; i < 1024; i++ { // 64 MiB: far beyond the socket buffers
			if _, err := w.Write(chunk); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	})
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = NewServer(h, Limits{WriteTimeout: time.Second}, nil, nil)
	ts.Listener = Listen(ts.Listener, Limits{}, nil)
	ts.Start()
	defer ts.Close()
	c, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("64 MiB were written to a client that read nothing")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler was still writing to a client that reads nothing after 10 s")
	}
}
