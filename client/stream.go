package client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/seal"
	"github.com/cloisterhq/cloister/sealed"
)

// Streamed uploads: for programs and inputs too large to send in one
// request (or to hold in memory), UploadInputStream and
// UploadProgramStream seal the bytes as they read them (package sealed:
// age's STREAM, 64 KiB chunks, a fresh content key) and send the sealed
// file in chunks; the content key goes last, sealed to the session's key,
// in a commit signed over the file's size and SHA-256. Memory stays at one
// chunk whatever the size. A chunk whose connection drops is sent again
// from where the node says it stopped (the client keeps the chunk until
// the node has it), so a dropped connection costs a chunk, not the upload.

// streamRetries bounds the attempts at one chunk after a dropped
// connection; streamBackoff is the first wait between them (doubling).
const (
	streamRetries = 6
	streamBackoff = 100 * time.Millisecond
)

// UploadInputStream seals size bytes read from r to the session and sends
// them as input name, signed by key. r must give exactly size bytes.
func (a *AttestedSession) UploadInputStream(ctx context.Context, key *keys.PrivateKey, name string, r io.Reader, size int64) (*Upload, error) {
	return a.uploadStream(ctx, key, false, name, r, size)
}

// UploadProgramStream is UploadInputStream for a program: the node checks
// its plaintext SHA-256 against the policy before keeping it, and only
// the isolate's worker ever opens it.
func (a *AttestedSession) UploadProgramStream(ctx context.Context, key *keys.PrivateKey, name string, r io.Reader, size int64) (*Upload, error) {
	return a.uploadStream(ctx, key, true, name, r, size)
}

func (a *AttestedSession) uploadStream(ctx context.Context, key *keys.PrivateKey, program bool, name string, r io.Reader, size int64) (*Upload, error) {
	p, err := a.principal(key)
	if err != nil {
		return nil, err
	}
	if err := a.live(); err != nil {
		return nil, fmt.Errorf("upload %q as %q: %w", name, p.ID, err)
	}
	if size < 0 {
		return nil, fmt.Errorf("upload %q: negative size", name)
	}
	fail := func(err error) (*Upload, error) { return nil, fmt.Errorf("upload %q as %q: %w", name, p.ID, err) }
	beginOp, op, keyKind := protocol.OpBeginUploadInput, protocol.OpUploadInput, protocol.KindInputKey
	if program {
		beginOp, op, keyKind = protocol.OpBeginUploadProgram, protocol.OpUploadProgram, protocol.KindProgramKey
	}
	ctSize := sealed.CiphertextSize(size)
	auth, err := a.sign(key, p.ID, beginOp, name, binary.BigEndian.AppendUint64(nil, uint64(ctSize)))
	if err != nil {
		return nil, err
	}
	begun, err := a.session.BeginUpload(ctx, connect.NewRequest(&cloisterv1.BeginUploadRequest{
		SessionId: a.id, Name: name, Program: program, Size: ctSize, Auth: auth}))
	if err != nil {
		return fail(err)
	}
	chunk := begun.Msg.MaxChunk
	if chunk <= 0 || chunk > 4<<20 {
		chunk = 4 << 20
	}
	cw := newChunkWriter(ctx, a, begun.Msg.UploadId, int(chunk))
	defer cw.stop()
	// The commit binds the file by its ciphertext's SHA-256; the node
	// checks a pinned plaintext hash itself (decision 0076), so the
	// client does not hash the plaintext.
	w, err := sealed.NewWriter(cw, sealed.NoPlaintextHash())
	if err != nil {
		return nil, err
	}
	ck := w.Key()
	defer clear(ck[:])
	n, err := io.Copy(w, io.LimitReader(r, size))
	if err == nil && n != size {
		err = fmt.Errorf("read %d bytes of the %d declared", n, size)
	}
	if err != nil {
		return fail(err)
	}
	sum, err := w.Close()
	if err == nil {
		err = cw.finish()
	}
	if err != nil {
		return fail(err)
	}
	if sum.Size != ctSize {
		return fail(fmt.Errorf("sealed %d bytes, %d expected", sum.Size, ctSize))
	}
	ctSHA, err := hex.DecodeString(strings.TrimPrefix(sum.Digest, "sha256:"))
	if err != nil || len(ctSHA) != 32 {
		return fail(fmt.Errorf("bad ciphertext digest %q", sum.Digest))
	}
	keyEnv, err := seal.Seal(a.hpke, ck[:], protocol.SealInfo(keyKind, a.id, name, ""), protocol.SealAAD(a.hash))
	if err != nil {
		return nil, err
	}
	manifest := protocol.StreamManifest(ctSize, [32]byte(ctSHA), keyEnv)
	if auth, err = a.sign(key, p.ID, op, name, manifest); err != nil {
		return nil, err
	}
	resp, err := a.session.CommitUpload(ctx, connect.NewRequest(&cloisterv1.CommitUploadRequest{
		SessionId: a.id, UploadId: begun.Msg.UploadId, KeyEnvelope: keyEnv, CiphertextSha256: ctSHA, Auth: auth}))
	if err != nil {
		return fail(err)
	}
	return &Upload{EnvelopeSHA256: resp.Msg.EnvelopeSha256, State: resp.Msg.State, EventIndex: resp.Msg.EventIndex}, nil
}

// chunkWriter sends what is written to it in chunks of a fixed size, one
// request at a time and in order, keeping each chunk until the node has
// it. A sender goroutine sends one chunk while the next is being sealed
// (two buffers), so that the client's sealing and hashing overlap the
// request and the node's work on it.
type chunkWriter struct {
	ctx  context.Context
	a    *AttestedSession
	id   []byte
	buf  []byte      // being filled
	full chan []byte // to the sender
	free chan []byte // back from it, emptied
	done chan struct{}
	once sync.Once
	mu   sync.Mutex
	err  error // the sender's first error
	sent int64 // bytes the node holds; the sender's
}

func newChunkWriter(ctx context.Context, a *AttestedSession, id []byte, size int) *chunkWriter {
	c := &chunkWriter{ctx: ctx, a: a, id: id, full: make(chan []byte), free: make(chan []byte, 2), done: make(chan struct{})}
	c.free <- make([]byte, 0, size)
	c.buf = make([]byte, 0, size)
	go c.sender()
	return c
}

// sender sends the chunks handed to it in order; after an error it only
// gives the buffers back.
func (c *chunkWriter) sender() {
	defer close(c.done)
	for b := range c.full {
		if c.failed() == nil {
			if err := c.send(b); err != nil {
				c.mu.Lock()
				c.err = err
				c.mu.Unlock()
			}
		}
		c.free <- b[:0]
	}
}

func (c *chunkWriter) failed() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), cap(c.buf)-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == cap(c.buf) {
			if err := c.hand(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// hand gives the filled buffer to the sender and takes an empty one.
func (c *chunkWriter) hand() error {
	if err := c.failed(); err != nil {
		return err
	}
	c.full <- c.buf
	c.buf = <-c.free
	return c.failed()
}

// finish sends what is buffered and waits until the node holds all of it.
func (c *chunkWriter) finish() error {
	if len(c.buf) > 0 {
		if err := c.hand(); err != nil {
			return err
		}
	}
	c.stop()
	return c.failed()
}

// stop ends the sender (after the chunk it holds) and waits for it.
func (c *chunkWriter) stop() {
	c.once.Do(func() { close(c.full) })
	<-c.done
}

// send sends one chunk; after a dropped connection it asks the node how
// much it holds and sends the rest of the chunk from there.
func (c *chunkWriter) send(data []byte) error {
	backoff := streamBackoff
	for attempt := 0; len(data) > 0; attempt++ {
		resp, err := c.a.session.PutChunk(c.ctx, connect.NewRequest(&cloisterv1.PutChunkRequest{
			SessionId: c.a.id, UploadId: c.id, Offset: c.sent, Data: data}))
		if err == nil {
			if resp.Msg.Received != c.sent+int64(len(data)) {
				return fmt.Errorf("the node holds %d bytes after a chunk that ends at %d", resp.Msg.Received, c.sent+int64(len(data)))
			}
			c.sent = resp.Msg.Received
			return nil
		}
		if !retriable(err) || attempt >= streamRetries || c.ctx.Err() != nil {
			return err
		}
		select {
		case <-time.After(backoff):
		case <-c.ctx.Done():
			return c.ctx.Err()
		}
		backoff *= 2
		// Where did the node stop? It may have the chunk already.
		resp, qerr := c.a.session.PutChunk(c.ctx, connect.NewRequest(&cloisterv1.PutChunkRequest{
			SessionId: c.a.id, UploadId: c.id}))
		if qerr != nil {
			if !retriable(qerr) {
				return qerr
			}
			continue
		}
		got := resp.Msg.Received
		if got < c.sent || got > c.sent+int64(len(data)) {
			return fmt.Errorf("the node holds %d bytes; this client sent %d and holds %d more", got, c.sent, len(data))
		}
		data = data[got-c.sent:]
		c.sent = got
	}
	return nil
}

// retriable: the request may not have reached the node, or its answer not
// come back (a dropped connection, a restart of the listener).
func retriable(err error) bool {
	var ce *connect.Error
	if errors.As(err, &ce) {
		switch ce.Code() {
		case connect.CodeUnavailable, connect.CodeUnknown, connect.CodeDeadlineExceeded, connect.CodeAborted:
			return true
		}
		return false
	}
	return true
}

// readStream fetches a streamed output's sealed file in chunks and writes
// its plaintext to w as each chunk authenticates. The sealed file must be
// the one GetResult described (its SHA-256, which the result commitment
// binds through the stream manifest); a dropped connection costs the
// chunk in flight, a forgotten read id (the node restarted) a signed
// GetResult.
func (a *AttestedSession) readStream(ctx context.Context, key *keys.PrivateKey, reader, output string, st *cloisterv1.ResultStream, w io.Writer) (int64, error) {
	fail := func(err error) (int64, error) { return 0, fmt.Errorf("result %q for %q: %w", output, reader, err) }
	if len(st.CiphertextSha256) != sha256.Size || st.Size <= 0 {
		return fail(fmt.Errorf("the node describes a stream of %d bytes with a %d-byte digest", st.Size, len(st.CiphertextSha256)))
	}
	raw, err := key.Open(st.KeyEnvelope, protocol.SealInfo(protocol.KindOutputKey, a.id, output, reader), protocol.SealAAD(a.hash))
	if err != nil {
		return fail(fmt.Errorf("opening the content key: %w", err))
	}
	defer clear(raw)
	if len(raw) != sealed.KeySize {
		return fail(fmt.Errorf("a content key of %d bytes", len(raw)))
	}
	var ck sealed.Key
	copy(ck[:], raw)
	defer clear(ck[:])
	rr := &rangeReader{ctx: ctx, a: a, key: key, output: output, st: st, h: sha256.New()}
	_, n, err := sealed.Open(w, rr, &ck, nil)
	if err != nil {
		return n, fmt.Errorf("result %q for %q: %w", output, reader, err)
	}
	if got := rr.h.Sum(nil); rr.off != st.Size || !bytes.Equal(got, st.CiphertextSha256) {
		return n, fmt.Errorf("result %q for %q: read %d bytes with SHA-256 %x; the node committed to %d bytes with %x", output, reader, rr.off, got, st.Size, st.CiphertextSha256)
	}
	return n, nil
}

// rangeReader reads a streamed output's sealed file from the node, one
// ReadResult at a time, hashing what it reads.
type rangeReader struct {
	ctx    context.Context
	a      *AttestedSession
	key    *keys.PrivateKey
	output string
	st     *cloisterv1.ResultStream
	h      hash.Hash
	off    int64
	buf    []byte // read, not yet returned
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		if r.off >= r.st.Size {
			return 0, io.EOF
		}
		data, err := r.fetch()
		if err != nil {
			return 0, err
		}
		r.h.Write(data)
		r.off += int64(len(data))
		r.buf = data
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// fetch reads the next chunk, retrying after a dropped connection.
func (r *rangeReader) fetch() ([]byte, error) {
	chunk := r.st.MaxChunk
	if chunk <= 0 || chunk > 4<<20 {
		chunk = 4 << 20
	}
	backoff := streamBackoff
	for attempt := 0; ; attempt++ {
		resp, err := r.a.session.ReadResult(r.ctx, connect.NewRequest(&cloisterv1.ReadResultRequest{
			SessionId: r.a.id, ReadId: r.st.ReadId, Offset: r.off, Length: chunk}))
		if err == nil {
			if len(resp.Msg.Data) == 0 || int64(len(resp.Msg.Data)) > min(chunk, r.st.Size-r.off) {
				return nil, fmt.Errorf("the node returned %d bytes at %d of %d", len(resp.Msg.Data), r.off, r.st.Size)
			}
			return resp.Msg.Data, nil
		}
		if attempt >= streamRetries || r.ctx.Err() != nil {
			return nil, err
		}
		switch {
		case connect.CodeOf(err) == connect.CodeNotFound:
			// The node no longer knows the read id (it restarted): ask
			// again, signed; the file must be the same.
			_, resp, gerr := r.a.getResult(r.ctx, r.key, r.output)
			if gerr != nil {
				return nil, gerr
			}
			if resp.Stream == nil || resp.Stream.Size != r.st.Size || !bytes.Equal(resp.Stream.CiphertextSha256, r.st.CiphertextSha256) {
				return nil, fmt.Errorf("the node now describes another output than the one being read")
			}
			r.st.ReadId = resp.Stream.ReadId
			continue
		case !retriable(err):
			return nil, err
		}
		select {
		case <-time.After(backoff):
		case <-r.ctx.Done():
			return nil, r.ctx.Err()
		}
		backoff *= 2
	}
}
