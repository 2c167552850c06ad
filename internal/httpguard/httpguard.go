package httpguard

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Limits are what one client may hold of a listener. A zero field takes
// its default (DefaultLimits); the defaults suit a public API whose
// requests are small or streamed at a reasonable rate.
type Limits struct {
	// MaxConns bounds the connections open at once; a connection over it
	// is closed as soon as it is accepted.
	MaxConns int
	// MaxConnsPerAddr bounds the connections open at once from one IP
	// address (clients behind one NAT or proxy share it: raise it there).
	MaxConnsPerAddr int
	// HeaderTimeout bounds the TLS handshake and the reading of a
	// request's headers (HTTP/1).
	HeaderTimeout time.Duration
	// IdleTimeout closes a connection with no request in progress.
	IdleTimeout time.Duration
	// WriteTimeout bounds a response, from the end of the request headers
	// (HTTP/1) or the stream's start (HTTP/2): long polls must fit in it.
	WriteTimeout time.Duration
	// BodyTimeout is the time a request body has before MinBodyRate
	// starts counting: a body must be whole by
	// start + BodyTimeout + bytes/MinBodyRate, checked as it arrives.
	BodyTimeout time.Duration
	// MinBodyRate is the slowest a request body may arrive, bytes/s,
	// past BodyTimeout.
	MinBodyRate int64
	// MaxHeaderBytes bounds a request's headers (HTTP/1) and the header
	// list an HTTP/2 client may send.
	MaxHeaderBytes int
	// MaxStreams bounds the concurrent requests of one HTTP/2 connection.
	MaxStreams int
}

// DefaultLimits are the limits a zero Limits field takes.
var DefaultLimits = Limits{
	MaxConns:        1024,
	MaxConnsPerAddr: 256,
	HeaderTimeout:   10 * time.Second,
	IdleTimeout:     90 * time.Second,
	WriteTimeout:    2 * time.Minute,
	BodyTimeout:     10 * time.Second,
	MinBodyRate:     64 << 10,
	MaxHeaderBytes:  32 << 10,
	MaxStreams:      100,
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	d := DefaultLimits
	orDefault(&l.MaxConns, d.MaxConns)
	orDefault(&l.MaxConnsPerAddr, d.MaxConnsPerAddr)
	orDefault(&l.HeaderTimeout, d.HeaderTimeout)
	orDefault(&l.IdleTimeout, d.IdleTimeout)
	orDefault(&l.WriteTimeout, d.WriteTimeout)
	orDefault(&l.BodyTimeout, d.BodyTimeout)
	orDefault(&l.MinBodyRate, d.MinBodyRate)
	orDefault(&l.MaxHeaderBytes, d.MaxHeaderBytes)
	orDefault(&l.MaxStreams, d.MaxStreams)
	return l
}

func orDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Stats counts what the guard did; a service exports them as metrics.
type Stats struct {
	Open         atomic.Int64  // connections open now
	Accepted     atomic.Uint64 // connections let through
	RefusedTotal atomic.Uint64 // connections closed at once: MaxConns reached
	RefusedAddr  atomic.Uint64 // connections closed at once: MaxConnsPerAddr reached
	SlowBodies   atomic.Uint64 // request bodies cut off for arriving too slowly
}

// NewServer returns an http.Server for h under l: header, idle and write
// timeouts, header size and HTTP/2 stream bounds, and h wrapped by Bodies.
// The TLS handshake is bounded by HeaderTimeout too (net/http uses the
// smallest of its timeouts). Serve it on a listener from Listen. st may
// be nil.
//
// There is deliberately no ReadTimeout: streamed uploads may take minutes.
// A client that trickles its body is cut off by Bodies' minimum rate per
// request (SlowBodies; node.TestAttackSlowBody), its headers by
// HeaderTimeout, and the connections it may hold by Listen's caps.
func NewServer(h http.Handler, l Limits, st *Stats, errorLog *log.Logger) *http.Server {
	l = l.WithDefaults()
	return &http.Server{
		Handler:           Bodies(h, l, st),
		ReadHeaderTimeout: l.HeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		WriteTimeout:      l.WriteTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: l.MaxStreams,
			// A client that stops reading responses cannot pin a
			// connection's writer for longer than this.
			WriteByteTimeout: l.HeaderTimeout * 3,
		},
		ErrorLog: errorLog,
	}
}

// Listen wraps ln so that at most l.MaxConns connections, and at most
// l.MaxConnsPerAddr from one IP address, are open at once. A connection
// over either bound is closed as soon as it is accepted (the client sees
// its connection reset or its handshake fail at once, rather than queue
// unseen behind the kernel's backlog) and counted in st (may be nil).
func Listen(ln net.Listener, l Limits, st *Stats) net.Listener {
	l = l.WithDefaults()
	if st == nil {
		st = new(Stats)
	}
	return &listener{Listener: ln, max: l.MaxConns, perAddr: l.MaxConnsPerAddr, st: st, byAddr: map[netip.Addr]int{}}
}

type listener struct {
	net.Listener
	max, perAddr int
	st           *Stats

	mu     sync.Mutex
	open   int
	byAddr map[netip.Addr]int
}

func (gl *listener) Accept() (net.Conn, error) {
	for {
		c, err := gl.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := remoteIP(c)
		gl.mu.Lock()
		switch {
		case gl.open >= gl.max:
			gl.st.RefusedTotal.Add(1)
		case gl.byAddr[addr] >= gl.perAddr:
			gl.st.RefusedAddr.Add(1)
		default:
			gl.open++
			gl.byAddr[addr]++
			gl.mu.Unlock()
			gl.st.Open.Add(1)
			gl.st.Accepted.Add(1)
			return &conn{Conn: c, gl: gl, addr: addr}, nil
		}
		gl.mu.Unlock()
		c.Close()
	}
}

func (gl *listener) release(addr netip.Addr) {
	gl.mu.Lock()
	defer gl.mu.Unlock()
	gl.open--
	if gl.byAddr[addr]--; gl.byAddr[addr] <= 0 {
		delete(gl.byAddr, addr)
	}
	gl.st.Open.Add(-1)
}

// remoteIP is the address connections are counted under: the peer's IP
// (IPv4-mapped IPv6 as IPv4); the zero Addr for peers that are not TCP.
func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

type conn struct {
	net.Conn
	gl   *listener
	addr netip.Addr
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.gl.release(c.addr) })
	return err
}

// SlowBodyError is the error a request body's Read returns once the body
// has fallen behind its deadline (Limits.BodyTimeout, Limits.MinBodyRate).
type SlowBodyError struct {
	Read  int64         // bytes received
	After time.Duration // since the request started
	Limit Limits
}

func (e *SlowBodyError) Error() string {
	return fmt.Sprintf("request body too slow: %d bytes in %s, below the listener's minimum of %d bytes/s after %s; the request is cut off",
		e.Read, e.After.Round(time.Millisecond), e.Limit.MinBodyRate, e.Limit.BodyTimeout)
}

// Bodies wraps h so that every request body must arrive by
// start + l.BodyTimeout + bytes/l.MinBodyRate: the connection's (HTTP/1)
// or stream's (HTTP/2) read deadline is moved forward as bytes arrive, so
// a body that stalls or trickles is cut off at its deadline, while a large
// one arriving at a steady pace never is. Requests without a body pass
// untouched. st may be nil.
func Bodies(h http.Handler, l Limits, st *Stats) http.Handler {
	l = l.WithDefaults()
	if st == nil {
		st = new(Stats)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		b := &pacedBody{body: r.Body, rc: http.NewResponseController(w), start: time.Now(), l: l, st: st}
		if err := b.rc.SetReadDeadline(b.start.Add(l.BodyTimeout)); err != nil {
			// A writer without deadlines (a test recorder): nothing to pace.
			h.ServeHTTP(w, r)
			return
		}
		b.set = b.start.Add(l.BodyTimeout)
		r.Body = b
		h.ServeHTTP(w, r)
	})
}

// paceSlack is how far ahead of the due time the deadline is set, so
// that it is moved about once per second of body at the minimum rate
// rather than at every read.
const paceSlack = time.Second

type pacedBody struct {
	body  io.ReadCloser
	rc    *http.ResponseController
	start time.Time
	l     Limits
	st    *Stats
	read  int64
	set   time.Time // the deadline in force
	slow  bool
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if b.slow {
		return 0, b.slowError()
	}
	n, err := b.body.Read(p)
	b.read += int64(n)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			b.slow = true
			b.st.SlowBodies.Add(1)
			return n, b.slowError()
		}
		return n, err
	}
	due := b.start.Add(b.l.BodyTimeout + time.Duration(float64(b.read)/float64(b.l.MinBodyRate)*float64(time.Second)))
	if due.After(b.set.Add(-paceSlack / 2)) {
		b.set = due.Add(paceSlack)
		b.rc.SetReadDeadline(b.set)
	}
	return n, nil
}

func (b *pacedBody) slowError() error {
	return &SlowBodyError{Read: b.read, After: time.Since(b.start), Limit: b.l}
}

func (b *pacedBody) Close() error { return b.body.Close() }
