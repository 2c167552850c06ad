package node

import (
	"compress/gzip"
	"io"
	"net/http"
	"sync/atomic"

	"connectrpc.com/connect"

	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/policy"
)

// Limits bound what the node accepts from the network before it does any
// work on a request (docs/decisions/0060-request-limits.md). A zero field
// takes its default.
type Limits struct {
	// HTTP bounds connections, headers, bodies and responses on the
	// listener Serve opens (package httpguard).
	HTTP httpguard.Limits
	// MaxUploadBytes bounds one sealed program or input (the envelope).
	// Default 64 MiB; larger data belongs in a blob store.
	MaxUploadBytes int64
	// MaxChunkBytes bounds one chunk of a streamed upload (PutChunk).
	// Default 4 MiB.
	MaxChunkBytes int64
	// MaxStreamBytes bounds one streamed upload (BeginUpload's size).
	// Default 64 GiB; the creator's stored-bytes quota applies too.
	MaxStreamBytes int64
	// StreamOutputAbove: an output of at least this many bytes is kept as
	// a sealed file that readers fetch by range (ReadResult), not as an
	// envelope per reader. Default 16 MiB.
	StreamOutputAbove int64
	// MaxInflightBytes bounds the request bodies being read and handled
	// at once, counted at their declared (or, undeclared, largest
	// allowed) size: many large uploads at once wait for none of the
	// node's memory, they are refused. Default 512 MiB.
	MaxInflightBytes int64
}

// Defaults of Limits.
const (
	DefaultMaxUploadBytes    = 64 << 20
	DefaultMaxChunkBytes     = 4 << 20
	DefaultMaxStreamBytes    = 64 << 30
	DefaultStreamOutputAbove = 16 << 20
	// maxReadsInFlight bounds the ReadResult answers being built at once
	// (each at most MaxChunkBytes).
	maxReadsInFlight        = 16
	DefaultMaxInflightBytes = 512 << 20
)

func (l Limits) withDefaults() Limits {
	l.HTTP = l.HTTP.WithDefaults()
	if l.MaxUploadBytes <= 0 {
		l.MaxUploadBytes = DefaultMaxUploadBytes
	}
	if l.MaxInflightBytes <= 0 {
		l.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if l.MaxChunkBytes <= 0 {
		l.MaxChunkBytes = DefaultMaxChunkBytes
	}
	if l.MaxStreamBytes <= 0 {
		l.MaxStreamBytes = DefaultMaxStreamBytes
	}
	if l.StreamOutputAbove <= 0 {
		l.StreamOutputAbove = DefaultStreamOutputAbove
	}
	return l
}

// Rules of the request limits, as refusals and metrics name them.
const (
	ruleRequestSize = "request-size"
	ruleInflight    = "requests-in-flight"
	ruleCompression = "compression-ratio"
)

// rpcLimit is what one RPC may send: its body on the wire and its message
// once decoded (decompressed), and whether it may be compressed at all.
type rpcLimit struct {
	message int64  // decoded message; the wire body may add framing
	flag    string // how an operator raises it ("" if fixed)
	gzip    bool
}

// Fixed limits of the small RPCs: a session id, a nonce, a signature.
const (
	smallMessage = 4 << 10
	// authOverhead is what a signed request adds to its payload (principal,
	// nonce, signature, names) and an admission token at most.
	authOverhead = 8 << 10
	// wireOverhead is framing around a message (gRPC's 5-byte prefix, a
	// JSON encoding's base64 of bytes fields: 4/3, rounded up).
	wireOverheadNum, wireOverheadDen = 4, 3
	// maxCompressionRatio bounds how much a compressed request may expand:
	// a policy compresses a few times; a request that expands more is
	// padding, refused before it costs more than this many times its size.
	maxCompressionRatio = 16
)

// wire is the largest body allowed on the wire for a message of at most
// m bytes: base64 in the JSON codec makes bytes fields 4/3 as long.
func wire(m int64) int64 { return m*wireOverheadNum/wireOverheadDen + 1024 }

// rpcLimits returns every RPC's limit under l.
func rpcLimits(l Limits) map[string]rpcLimit {
	upload := rpcLimit{message: l.MaxUploadBytes + authOverhead, flag: "--max-upload (Limits.MaxUploadBytes)"}
	small := rpcLimit{message: smallMessage}
	return map[string]rpcLimit{
		"GetNodeInfo": small,
		"GetStatus":   small,
		// A policy compresses: a client may send it gzipped, within the
		// policy limit once decompressed and maxCompressionRatio.
		"CreateSession": {message: policy.MaxFileSize + authOverhead, gzip: true},
		"Attest":        small,
		"UploadProgram": upload,
		"UploadInput":   upload,
		"GetResult":     small,
		"CloseSession":  small,
		// Streamed uploads: a signed request, a chunk, a key envelope.
		"BeginUpload":  {message: smallMessage + authOverhead},
		"PutChunk":     {message: l.MaxChunkBytes + smallMessage, flag: "--max-chunk (Limits.MaxChunkBytes)"},
		"CommitUpload": {message: smallMessage + authOverhead},
		"ReadResult":   {message: smallMessage},
	}
}

// inflight counts the bytes of request bodies admitted and not yet
// handled.
type inflight struct {
	max int64
	cur atomic.Int64
}

func (f *inflight) take(n int64) bool {
	if f.cur.Add(n) > f.max {
		f.cur.Add(-n)
		return false
	}
	return true
}

func (f *inflight) give(n int64) { f.cur.Add(-n) }

// bounded wraps one RPC's handler: a body declared larger than the limit
// is refused before a byte of it is read, any other is cut at the limit
// as it is read (http.MaxBytesReader), and its size is taken from the
// node's in-flight budget until the handler returns.
func (n *Node) bounded(method string, lim rpcLimit, h http.Handler) http.Handler {
	errw := connect.NewErrorWriter()
	maxWire := wire(lim.message)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		refuse := func(err error) {
			n.metrics.observe(method, err)
			errw.Write(w, r, err)
		}
		if !lim.gzip {
			for _, h := range []string{"Content-Encoding", "Connect-Content-Encoding", "Grpc-Encoding"} {
				if enc := r.Header.Get(h); enc != "" && enc != "identity" {
					refuse(refused(connect.CodeUnimplemented, ruleCompression, "%s takes no compressed requests (%s: %.20q): its message is small or already ciphertext; send it uncompressed",
						method, h, enc))
					return
				}
			}
		}
		if r.ContentLength > maxWire {
			refuse(refused(connect.CodeResourceExhausted, ruleRequestSize, "%s request body is %d bytes, at most %d accepted%s",
				method, r.ContentLength, maxWire, raiseWith(lim.flag)))
			return
		}
		size := maxWire
		if r.ContentLength >= 0 {
			size = r.ContentLength
		}
		if !n.inflight.take(size) {
			refuse(refused(connect.CodeResourceExhausted, ruleInflight, "the node is handling %d bytes of requests, at most %d at once; retry later (raise with --max-inflight, Limits.MaxInflightBytes)",
				n.inflight.cur.Load(), n.inflight.max))
			return
		}
		defer n.inflight.give(size)
		r.Body = http.MaxBytesReader(w, r.Body, maxWire)
		h.ServeHTTP(w, r)
	})
}

func raiseWith(flag string) string {
	if flag == "" {
		return ""
	}
	return " (raise with " + flag + ")"
}

// rpcOptions are the connect options of one RPC under lim: the decoded
// message is bounded by lim.message, and compressed requests are refused
// unless lim.gzip, then bounded in ratio as they are decompressed.
func rpcOptions(lim rpcLimit) []connect.HandlerOption {
	opts := []connect.HandlerOption{connect.WithReadMaxBytes(int(lim.message))}
	if lim.gzip {
		opts = append(opts, connect.WithCompression("gzip",
			func() connect.Decompressor { return &ratioGzip{ratio: maxCompressionRatio, floor: 64 << 10} },
			func() connect.Compressor { return gzip.NewWriter(io.Discard) }))
	} else {
		opts = append(opts, connect.WithCompression("gzip", nil, nil))
	}
	return opts
}

// ratioGzip is a gzip decompressor that stops, with an error, as soon as
// it has produced more than ratio times the compressed bytes it consumed
// (plus floor): a small request cannot make the node inflate hundreds of
// megabytes before a size limit is checked.
type ratioGzip struct {
	ratio, floor int64
	src          countingReader
	zr           *gzip.Reader
	out          int64
	err          error
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (d *ratioGzip) Reset(r io.Reader) error {
	d.src = countingReader{r: r}
	d.out, d.err = 0, nil
	if d.zr == nil {
		zr, err := gzip.NewReader(&d.src)
		if err != nil {
			return err
		}
		d.zr = zr
		return nil
	}
	return d.zr.Reset(&d.src)
}

func (d *ratioGzip) Read(p []byte) (int, error) {
	if d.err != nil {
		return 0, d.err
	}
	if d.zr == nil {
		return 0, io.ErrUnexpectedEOF
	}
	n, err := d.zr.Read(p)
	d.out += int64(n)
	if d.out > d.floor+d.ratio*d.src.n {
		d.err = refused(connect.CodeResourceExhausted, ruleCompression,
			"compressed request expands more than %d times (%d bytes from %d): refused", d.ratio, d.out, d.src.n)
		return 0, d.err
	}
	return n, err
}

func (d *ratioGzip) Close() error {
	if d.zr == nil {
		return nil
	}
	return d.zr.Close()
}
