package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/policy"
	"github.com/cloisterhq/cloister/seal"
	"github.com/cloisterhq/cloister/sealed"
)

// Streamed uploads (decision 0074): a program or input too large for one
// request is a sealed file (package sealed) sent in chunks — BeginUpload,
// PutChunk…, CommitUpload — straight to a file in the session's
// directory, never whole in the node's memory. Its content key arrives at
// the commit, sealed to the session key; the node then authenticates every
// chunk (and checks a program's or pinned input's plaintext SHA-256)
// before it keeps the file. The run hands the worker the file and the key
// (the worker decrypts as the guest reads: isolate, decision 0072).

// streamRecord is a streamed item as its slot keeps it: the sealed file
// (in the session's directory, named by its SHA-256) and its key's
// envelope. The slot's EnvelopeSHA256 is the SHA-256 of the manifest the
// provider signed.
type streamRecord struct {
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	KeyEnvelope []byte `json:"key_envelope"`
}

// streamFile is where a kept streamed item lives.
func (s *store) streamFile(id, sha string) string {
	return filepath.Join(s.sessionDir(id), "stream-"+sha)
}

// pendingUpload is a streamed upload between BeginUpload and its commit.
type pendingUpload struct {
	name      string
	program   bool
	principal string
	size      int64

	mu       sync.Mutex
	f        *atomicfile.File // in the session's directory, under a temporary name
	received int64
	hash     hash.Hash
	last     time.Time
	done     bool
	// committing: the commit is checking the file, holding neither the
	// session's lock nor u.mu; chunks and other commits are refused, and
	// an abandon only marks the upload done, leaving its file and quota
	// to the commit.
	committing bool
}

// over refuses a chunk or commit of an upload that ended (abandoned or
// committed) or is being committed; u.mu is held.
func (u *pendingUpload) over() error {
	if u.done {
		return connect.NewError(connect.CodeNotFound, fmt.Errorf("upload of %q is over", u.name))
	}
	if u.committing {
		return connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("upload of %q is being committed", u.name))
	}
	return nil
}

// uploadIdle is how long an upload may go without a chunk before it is
// abandoned (its file removed, its quota given back).
const uploadIdle = 10 * time.Minute

func (s *session) beginUpload(req *cloisterv1.BeginUploadRequest) (*cloisterv1.BeginUploadResponse, error) {
	now := s.n.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.uploadable(now); err != nil {
		return nil, err
	}
	op := protocol.OpBeginUploadInput
	if req.Program {
		op = protocol.OpBeginUploadProgram
	}
	p, err := s.authorize(req.Auth, op, req.Name, binary.BigEndian.AppendUint64(nil, uint64(req.Size)), now)
	if err != nil {
		return nil, err
	}
	if _, err := s.checkUploader(p, req.Program, req.Name); err != nil {
		return nil, err
	}
	if req.Size <= 0 || req.Size > s.n.limits.MaxStreamBytes {
		return nil, refused(connect.CodeInvalidArgument, ruleRequestSize, "a streamed upload of %d bytes: at most %d (raise with --max-stream)", req.Size, s.n.limits.MaxStreamBytes)
	}
	s.expireUploads(now)
	// One upload per name: beginning again abandons the earlier one.
	for id, u := range s.uploads {
		if u.name == req.Name && u.program == req.Program {
			s.abandon(id)
		}
	}
	if err := s.n.admit.checkDisk(req.Size); err != nil {
		return nil, err
	}
	if err := s.n.admit.addBytes(s.creator, req.Size, false, now); err != nil {
		return nil, err
	}
	dir := s.n.store.sessionDir(s.id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		s.n.admit.release(s.creator, 0, req.Size)
		return nil, storeError(err)
	}
	// Synced before use and read back once (the commit's check): written
	// around the page cache (decision 0078), unless the operator traded
	// durability for speed, where the page cache serves better.
	opts := []atomicfile.Option{atomicfile.Direct()}
	if !s.n.store.sync {
		opts = []atomicfile.Option{atomicfile.NoSync()}
	}
	f, err := atomicfile.Create(filepath.Join(dir, "stream-pending"), 0o600, opts...)
	if err != nil {
		s.n.admit.release(s.creator, 0, req.Size)
		return nil, storeError(err)
	}
	var raw [32]byte
	rand.Read(raw[:])
	id := hex.EncodeToString(raw[:])
	if s.uploads == nil {
		s.uploads = map[string]*pendingUpload{}
	}
	s.uploads[id] = &pendingUpload{name: req.Name, program: req.Program, principal: p.ID, size: req.Size, f: f, hash: sha256.New(), last: now}
	return &cloisterv1.BeginUploadResponse{UploadId: raw[:], MaxChunk: s.n.limits.MaxChunkBytes}, nil
}

// expireUploads abandons uploads idle for uploadIdle; s.mu is held.
func (s *session) expireUploads(now time.Time) {
	for id, u := range s.uploads {
		u.mu.Lock()
		idle := !u.committing && now.Sub(u.last) > uploadIdle
		u.mu.Unlock()
		if idle {
			s.abandon(id)
		}
	}
}

// abandon drops a pending upload: its file and its quota; s.mu is held.
func (s *session) abandon(id string) {
	u := s.uploads[id]
	delete(s.uploads, id)
	u.mu.Lock()
	defer u.mu.Unlock()
	if !u.done {
		u.done = true
		if !u.committing {
			u.drop(s)
		}
	}
}

// drop removes the upload's file and gives its quota back; u.mu is held.
func (u *pendingUpload) drop(s *session) {
	u.f.Abort()
	s.n.admit.release(s.creator, 0, u.size)
}

// abandonAll drops every pending upload (the session closed or started
// its run); s.mu is held.
func (s *session) abandonAll() {
	for id := range s.uploads {
		s.abandon(id)
	}
}

// pending finds an upload by its id; s.mu is not held.
func (s *session) pending(raw []byte) (*pendingUpload, string, error) {
	id := hex.EncodeToString(raw)
	s.mu.Lock()
	u := s.uploads[id]
	s.mu.Unlock()
	if u == nil {
		return nil, id, connect.NewError(connect.CodeNotFound, fmt.Errorf("no upload %.12s… in session %s (abandoned after %v idle, or committed)", id, s.id, uploadIdle))
	}
	return u, id, nil
}

func (s *session) putChunk(req *cloisterv1.PutChunkRequest) (*cloisterv1.PutChunkResponse, error) {
	u, _, err := s.pending(req.UploadId)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.over(); err != nil {
		return nil, err
	}
	u.last = s.n.now()
	if len(req.Data) == 0 {
		return &cloisterv1.PutChunkResponse{Received: u.received}, nil
	}
	switch {
	case req.Offset != u.received:
		return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("chunk at %d: the node holds %d bytes of %q; send from there", req.Offset, u.received, u.name))
	case int64(len(req.Data)) > u.size-u.received:
		return nil, refused(connect.CodeInvalidArgument, ruleRequestSize, "chunk of %d bytes at %d goes past the declared %d bytes of %q", len(req.Data), req.Offset, u.size, u.name)
	}
	if _, err := u.f.Write(req.Data); err != nil {
		return nil, storeError(err)
	}
	u.hash.Write(req.Data)
	u.received += int64(len(req.Data))
	return &cloisterv1.PutChunkResponse{Received: u.received}, nil
}

func (s *session) commitUpload(req *cloisterv1.CommitUploadRequest) (*cloisterv1.UploadResponse, error) {
	u, id, err := s.pending(req.UploadId)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	if err := u.over(); err != nil {
		u.mu.Unlock()
		return nil, err
	}
	received, size := u.received, u.size
	var sum [32]byte
	copy(sum[:], u.hash.Sum(nil))
	u.mu.Unlock()

	now := s.n.now()
	kind, _, _ := uploadKind(u.program)
	if len(req.CiphertextSha256) != sha256.Size {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%s %q: a ciphertext SHA-256 of %d bytes", kind, u.name, len(req.CiphertextSha256)))
	}
	// The signature covers what the provider says it sent; what arrived is
	// compared with it below, so that a mismatch is named as one.
	manifest := protocol.StreamManifest(size, [32]byte(req.CiphertextSha256), req.KeyEnvelope)
	p, key, wantHash, err := s.beginCommit(u, req, manifest, received, sum, now)
	if err != nil {
		return nil, err
	}
	defer clear(key[:])
	// Check the file (decision 0076) and make it durable holding neither
	// the session's lock nor the upload's: a pass over gigabytes and an
	// fsync of them must not stop the session's other requests (status,
	// other uploads) meanwhile.
	if commitHook != nil {
		commitHook()
	}
	// The check is CPU (a decryption, reading a block ahead), the fsync
	// is the disk: they run side by side, and a refused file's
	// fsync is simply wasted.
	synced := make(chan error, 1)
	go func() { synced <- u.f.Sync() }()
	r, rerr := u.f.Reader(size)
	if rerr == nil {
		err = verifyStream(u.name, key, r, wantHash)
		r.Close()
	}
	serr := <-synced
	switch {
	case rerr != nil:
		err = storeError(rerr)
	case err != nil:
		err = uploadRefusal(err, kind, u.name, p.ID)
	case serr != nil:
		err = storeError(serr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.committing = false
	if err == nil && u.done {
		err = connect.NewError(connect.CodeNotFound, fmt.Errorf("upload of %q was abandoned while it was committed", u.name))
	}
	if err == nil {
		err = s.uploadable(s.n.now())
	}
	hexSum := hex.EncodeToString(sum[:])
	if err == nil {
		if cerr := u.f.CommitTo(s.n.store.streamFile(s.id, hexSum)); cerr != nil {
			err = storeError(cerr)
		}
	}
	if err != nil {
		// The upload is over either way: a refused file is not kept.
		u.done = true
		u.drop(s)
		delete(s.uploads, id)
		return nil, err
	}
	u.done = true
	delete(s.uploads, id)
	msum := sha256.Sum256(manifest)
	slot := &slotRecord{Principal: p.ID, EnvelopeSHA256: hex.EncodeToString(msum[:]), Uploaded: now, Signature: req.Auth.Signature,
		Stream: &streamRecord{Size: size, SHA256: hexSum, KeyEnvelope: bytes.Clone(req.KeyEnvelope)}}
	return s.accept(u.program, u.name, slot, req.Auth, size, now)
}

// commitHook, set only by tests, runs while a commit checks its file.
var commitHook func()

// beginCommit checks a commit under the session's lock — signature,
// provider, size, the ciphertext's SHA-256, the content key's envelope —
// and marks the upload as committing. It returns the principal, the
// content key and the plaintext SHA-256 the policy pins (zero: none).
func (s *session) beginCommit(u *pendingUpload, req *cloisterv1.CommitUploadRequest, manifest []byte, received int64, sum [32]byte, now time.Time) (*policy.Principal, *sealed.Key, [32]byte, error) {
	var none [32]byte
	kind, op, _ := uploadKind(u.program)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.uploadable(now); err != nil {
		return nil, nil, none, err
	}
	p, err := s.authorize(req.Auth, op, u.name, manifest, now)
	if err != nil {
		return nil, nil, none, err
	}
	if p.ID != u.principal {
		return nil, nil, none, refused(connect.CodePermissionDenied, ruleProvider, "upload of %s %q was begun by %q, not %q", kind, u.name, u.principal, p.ID)
	}
	switch {
	case received != u.size:
		return nil, nil, none, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("%s %q: the node holds %d of the %d bytes declared; send the rest first", kind, u.name, received, u.size))
	case !bytes.Equal(req.CiphertextSha256, sum[:]):
		return nil, nil, none, refused(connect.CodeInvalidArgument, ruleSealed, "%s %q: the node received bytes with SHA-256 %x, the provider says %x", kind, u.name, sum, req.CiphertextSha256)
	}
	wantHash, err := s.checkUploader(p, u.program, u.name)
	if err != nil {
		return nil, nil, none, err
	}
	key, err := s.core.streamKey(u.program, u.name, req.KeyEnvelope)
	if err := uploadRefusal(err, kind, u.name, p.ID); err != nil {
		return nil, nil, none, err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.over(); err != nil {
		clear(key[:])
		return nil, nil, none, err
	}
	u.committing = true
	u.last = now
	return p, key, wantHash, nil
}

// verifyStream authenticates every chunk of a sealed file under key,
// checking the plaintext's SHA-256 against want if it is not zero.
func verifyStream(name string, key *sealed.Key, src io.Reader, want [32]byte) error {
	if want == ([32]byte{}) {
		// Nothing pinned: authenticating every chunk is enough, no hash
		// of the plaintext is needed.
		r, err := sealed.NewReader(src, key)
		if err == nil {
			_, err = io.Copy(io.Discard, r)
		}
		if err != nil {
			return fmt.Errorf("%w (%v)", errSealed, err)
		}
		return nil
	}
	got, _, err := sealed.Open(io.Discard, src, key, &want)
	switch {
	case errors.Is(err, sealed.ErrPlaintextHash):
		return &hashMismatchError{name: name, got: got, want: want}
	case err != nil:
		return fmt.Errorf("%w (%v)", errSealed, err)
	}
	return nil
}

// streamKey opens the envelope of a streamed item's content key.
func (c *core) streamKey(program bool, name string, keyEnvelope []byte) (*sealed.Key, error) {
	kind := protocol.KindInputKey
	if program {
		kind = protocol.KindProgramKey
	}
	pt, err := seal.Open(c.hpkeKey, keyEnvelope, protocol.SealInfo(kind, c.id, name, ""), protocol.SealAAD(c.policyHash))
	if err != nil {
		return nil, fmt.Errorf("%w (the content key's envelope: %v)", errSealed, err)
	}
	defer clear(pt)
	if len(pt) != sealed.KeySize {
		return nil, fmt.Errorf("%w (a content key of %d bytes, want %d)", errSealed, len(pt), sealed.KeySize)
	}
	var k sealed.Key
	copy(k[:], pt)
	return &k, nil
}

func (a sessionAPI) BeginUpload(ctx context.Context, req *connect.Request[cloisterv1.BeginUploadRequest]) (*connect.Response[cloisterv1.BeginUploadResponse], error) {
	return onSession(ctx, a, req.Msg.SessionId, req.Msg, (*session).beginUpload)
}

func (a sessionAPI) PutChunk(ctx context.Context, req *connect.Request[cloisterv1.PutChunkRequest]) (*connect.Response[cloisterv1.PutChunkResponse], error) {
	return onSession(ctx, a, req.Msg.SessionId, req.Msg, (*session).putChunk)
}

func (a sessionAPI) CommitUpload(ctx context.Context, req *connect.Request[cloisterv1.CommitUploadRequest]) (*connect.Response[cloisterv1.UploadResponse], error) {
	return onSession(ctx, a, req.Msg.SessionId, req.Msg, (*session).commitUpload)
}

// onSession finds the session a request names on this connection and
// calls fn on it.
func onSession[Req, Res any](ctx context.Context, a sessionAPI, id string, msg *Req, fn func(*session, *Req) (*Res, error)) (*connect.Response[Res], error) {
	s, err := a.onSessionConn(ctx, id)
	if err != nil {
		return nil, err
	}
	resp, err := fn(s, msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

// Streamed outputs: an output of at least Limits.StreamOutputAbove bytes
// is sealed once into a file in the session's directory (package sealed,
// as uploads are), its content key sealed to each reader; GetResult hands
// a reader its key envelope and a read id, and ReadResult serves the file
// by range. The result commitment's envelope hash for such a reader is the
// SHA-256 of protocol.StreamManifest(size, ciphertext SHA-256, the
// reader's key envelope), so the commitment binds every byte as it binds
// an envelope.

// outputStream is an output kept as a sealed file.
type outputStream struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // of the sealed file, which it names
	// KeyEnvelopes maps reader id to the content key sealed to it.
	KeyEnvelopes map[string][]byte `json:"key_envelopes"`
}

// manifestSHA256 is the hex SHA-256 of the stream manifest for reader rd:
// the output's "envelope hash" for rd.
func (o *outputStream) manifestSHA256(rd string) string {
	var ct [32]byte
	hex.Decode(ct[:], []byte(o.SHA256))
	sum := sha256.Sum256(protocol.StreamManifest(o.Size, ct, o.KeyEnvelopes[rd]))
	return hex.EncodeToString(sum[:])
}

// outputSink is where a run keeps its large outputs.
type outputSink struct {
	above int64 // outputs of at least this many bytes are streamed
	dir   string
	path  func(sha string) string
	sync  bool
}

// sealOutput seals src (size bytes) into a file of sink and its content
// key to each reader, reading src once, holding none of it.
func (c *core) sealOutput(sink *outputSink, name string, src io.Reader, readers []reader) (*outputStream, error) {
	if err := os.MkdirAll(sink.dir, 0o700); err != nil {
		return nil, err
	}
	var opts []atomicfile.Option
	if !sink.sync {
		opts = append(opts, atomicfile.NoSync())
	}
	f, err := atomicfile.Create(filepath.Join(sink.dir, "output-pending"), 0o600, opts...)
	if err != nil {
		return nil, err
	}
	defer f.Abort() // after a commit, nothing
	// Readers check the file by its ciphertext's SHA-256 (the manifest);
	// nobody pins an output's plaintext hash.
	w, err := sealed.NewWriter(f, sealed.NoPlaintextHash())
	if err != nil {
		return nil, err
	}
	key := w.Key()
	defer clear(key[:])
	if _, err := io.Copy(w, src); err != nil {
		return nil, fmt.Errorf("sealing output %q: %w", name, err)
	}
	sum, err := w.Close()
	if err != nil {
		return nil, fmt.Errorf("sealing output %q: %w", name, err)
	}
	o := &outputStream{Size: sum.Size, SHA256: strings.TrimPrefix(sum.Digest, "sha256:"), KeyEnvelopes: map[string][]byte{}}
	for _, rd := range readers {
		env, err := seal.Seal(rd.key, key[:], protocol.SealInfo(protocol.KindOutputKey, c.id, name, rd.id), protocol.SealAAD(c.policyHash))
		if err != nil {
			return nil, fmt.Errorf("sealing output %q's key to reader %q: %w", name, rd.id, err)
		}
		o.KeyEnvelopes[rd.id] = env
	}
	if err := f.CommitTo(sink.path(o.SHA256)); err != nil {
		return nil, err
	}
	return o, nil
}

// readGrant is what a read id lets its holder read: one streamed output,
// for the reader whose signed GetResult obtained it.
type readGrant struct {
	output, reader string
	path           string
	size           int64
}

// grantRead returns the read id of reader rd for output name (the same
// one on every GetResult: at most one per output and reader); s.mu is
// held.
func (s *session) grantRead(name, rd string, o *outputStream) []byte {
	for id, g := range s.reads {
		if g.output == name && g.reader == rd {
			raw, _ := hex.DecodeString(id)
			return raw
		}
	}
	var raw [32]byte
	rand.Read(raw[:])
	if s.reads == nil {
		s.reads = map[string]*readGrant{}
	}
	s.reads[hex.EncodeToString(raw[:])] = &readGrant{output: name, reader: rd, path: s.n.store.streamFile(s.id, o.SHA256), size: o.Size}
	return raw[:]
}

func (s *session) readResult(ctx context.Context, req *cloisterv1.ReadResultRequest) (*cloisterv1.ReadResultResponse, error) {
	s.mu.Lock()
	g := s.reads[hex.EncodeToString(req.ReadId)]
	state := s.rec.State
	s.mu.Unlock()
	switch {
	case g == nil || state != stateFinished:
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no read %.12x… in session %s: ask GetResult again", req.ReadId, s.id))
	case req.Offset < 0 || req.Offset > g.size || req.Length < 0:
		return nil, refused(connect.CodeInvalidArgument, ruleRequestSize, "read of %d bytes at %d: output %q is %d bytes", req.Length, req.Offset, g.output, g.size)
	}
	n := min(req.Length, s.n.limits.MaxChunkBytes, g.size-req.Offset)
	// The buffers of reads in flight are bounded in total.
	select {
	case s.n.readSlots <- struct{}{}:
		defer func() { <-s.n.readSlots }()
	case <-ctx.Done():
		return nil, connect.NewError(connect.CodeDeadlineExceeded, ctx.Err())
	}
	f, err := os.Open(g.path)
	if err != nil {
		return nil, storeError(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, req.Offset); err != nil {
		return nil, storeError(err)
	}
	return &cloisterv1.ReadResultResponse{Data: buf}, nil
}

func (a sessionAPI) ReadResult(ctx context.Context, req *connect.Request[cloisterv1.ReadResultRequest]) (*connect.Response[cloisterv1.ReadResultResponse], error) {
	return onSession(ctx, a, req.Msg.SessionId, req.Msg, func(s *session, r *cloisterv1.ReadResultRequest) (*cloisterv1.ReadResultResponse, error) {
		return s.readResult(ctx, r)
	})
}
