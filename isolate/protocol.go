package isolate

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/cloisterhq/cloister/sealed"
)

// The parent and the worker exchange frames over two pipes (the worker's
// stdin and stdout):
//
//	worker → parent  readyMsg     after the pre-job jail is in place
//	parent → worker  workerInput  {Preload}: optional, to a warm worker
//	parent → worker  workerInput  {Job}
//	worker → parent  lockedMsg    after rlimits, no_new_privs and seccomp
//	worker → parent  wireResult
//
// A frame is
//
//	u64 n  | u32 h | h bytes of header | blobs: (u64 len | len bytes)*  (n bytes after the first 8)
//
// in big-endian. The header carries the small fields, encoded by hand
// (wire.go); large byte strings (the module, inputs, stdout, stderr,
// outputs) travel raw after it as blobs, in the order the message's
// wireBlobs gives.
//
// The parent bounds every frame it reads: the worker runs hostile code and
// may be compromised by it, so its frames are untrusted input
// (FuzzReadFrame).

// blobMessage is a message with large byte strings outside its JSON.
type blobMessage interface {
	// wireBlobs returns the byte strings in wire order; it may record in
	// the message what the receiver needs to put them back (names).
	wireBlobs() [][]byte
	// setWireBlobs puts received byte strings back, after the JSON has
	// been decoded, and fails if their number is not what the JSON says.
	setWireBlobs([][]byte) error
}

// workerInput is one frame from the parent. A warm worker may first get a
// Preload: the module its job will probably run (the one the last job on
// the Runtime ran), which it compiles — in practice loads from the
// compilation cache — while it waits. A Job for that module then comes
// without the bytes (Module nil, ModuleSHA256 set). The parent sends a job
// only to a worker that holds no module or the job's own, so a worker never
// holds another program than the one it runs.
type workerInput struct {
	Preload []byte
	// PreloadDeterministic: the job will probably be deterministic (the
	// last one was), so an engine that compiles those differently
	// (wasmtime: NaN canonicalisation) prepares that code.
	PreloadDeterministic bool `json:",omitempty"`
	Job                  *job
}

func (m *workerInput) wireBlobs() [][]byte {
	if m.Job == nil {
		return [][]byte{m.Preload}
	}
	return [][]byte{m.Job.Module}
}

func (m *workerInput) setWireBlobs(blobs [][]byte) error {
	if len(blobs) != 1 {
		return fmt.Errorf("input frame: %d byte strings, want the module", len(blobs))
	}
	if m.Job == nil {
		if len(blobs[0]) == 0 {
			return errors.New("a preload frame holds no module")
		}
		m.Preload = blobs[0]
		return nil
	}
	if len(blobs[0]) > 0 { // empty: the worker holds the module (preload)
		m.Job.Module = blobs[0]
	}
	return nil
}

// files returns the descriptors that go with a job frame: the output
// area, the sealed module if any, then the inputs.
func (m *workerInput) files() []*os.File {
	if m.Job == nil {
		return nil
	}
	fs := []*os.File{m.Job.area}
	if m.Job.Sealed {
		fs = append(fs, m.Job.module)
	}
	return append(fs, m.Job.inputs...)
}

// setFiles puts received descriptors in the job, checking their number.
func (m *workerInput) setFiles(fs []*os.File) error {
	if m.Job == nil {
		if len(fs) != 0 {
			return fmt.Errorf("a preload frame came with %d descriptors", len(fs))
		}
		return nil
	}
	sealedModule := 0
	if m.Job.Sealed {
		sealedModule = 1
	}
	if len(fs) != 1+sealedModule+len(m.Job.InputNames) {
		return fmt.Errorf("job frame: %d descriptors for the output area, %d sealed module and %d inputs", len(fs), sealedModule, len(m.Job.InputNames))
	}
	seen := map[string]bool{}
	for _, n := range m.Job.InputNames {
		if seen[n] {
			return fmt.Errorf("job frame: input %q twice", n)
		}
		seen[n] = true
	}
	m.Job.area, fs = fs[0], fs[1:]
	if m.Job.Sealed {
		m.Job.module, fs = fs[0], fs[1:]
	}
	m.Job.inputs = fs
	return nil
}

// secretMsg carries the keys of one job — for its sealed module and
// sealed inputs — right after its job frame, in a frame of their own:
// they stay out of the job's header (which is copied and may be logged),
// and the frame's buffer is zeroed on both sides once read.
type secretMsg struct {
	Names []string // secretModule, secretInput(NAME)
	keys  [][]byte
}

func (m *secretMsg) wireBlobs() [][]byte { return m.keys }

func (m *secretMsg) setWireBlobs(blobs [][]byte) error {
	if len(blobs) != len(m.Names) {
		return fmt.Errorf("secret frame: %d keys for %d names", len(blobs), len(m.Names))
	}
	m.keys = blobs
	return nil
}

// newSecretMsg takes a job's keys apart for the wire (names sorted).
func newSecretMsg(keys map[string]*sealed.Key) *secretMsg {
	m := &secretMsg{}
	for _, name := range sortedKeys(keys) {
		m.Names = append(m.Names, name)
		m.keys = append(m.keys, keys[name][:])
	}
	return m
}

// jobKeys checks what the worker received against the job: one key of
// sealed.KeySize bytes for the sealed module if it is sealed and for each
// sealed input, nothing else.
func (m *secretMsg) jobKeys(j *job) (map[string]*sealed.Key, error) {
	want := map[string]bool{}
	if j.Sealed {
		want[secretModule] = true
	}
	for _, n := range j.SealedInputs {
		if !slices.Contains(j.InputNames, n) {
			return nil, fmt.Errorf("sealed input %q is not an input", n)
		}
		want[secretInput(n)] = true
	}
	keys := map[string]*sealed.Key{}
	for i, name := range m.Names {
		if !want[name] || keys[name] != nil {
			return nil, fmt.Errorf("secret frame: key %q not expected", name)
		}
		if len(m.keys[i]) != sealed.KeySize {
			return nil, fmt.Errorf("secret frame: key %q of %d bytes", name, len(m.keys[i]))
		}
		var k sealed.Key
		copy(k[:], m.keys[i])
		keys[name] = &k
	}
	if len(keys) != len(want) {
		return nil, fmt.Errorf("secret frame: %d keys for %d sealed items", len(keys), len(want))
	}
	return keys, nil
}

// callMsg is a guest's host call, from the worker while the guest runs:
// Seq counts the run's calls from 1; the request is the blob. The worker
// waits for the replyMsg of the same Seq before it sends another.
type callMsg struct {
	Seq  uint64
	Name string
	req  []byte
}

func (m *callMsg) wireBlobs() [][]byte { return [][]byte{m.req} }

func (m *callMsg) setWireBlobs(blobs [][]byte) error {
	if len(blobs) != 1 {
		return fmt.Errorf("host call frame: %d byte strings, want the request", len(blobs))
	}
	m.req = blobs[0]
	return nil
}

// replyMsg answers the call of the same Seq: a HostCall* status and the
// response (or a failure's message) as the blob.
type replyMsg struct {
	Seq    uint64
	Status uint32
	resp   []byte
}

func (m *replyMsg) wireBlobs() [][]byte { return [][]byte{m.resp} }

func (m *replyMsg) setWireBlobs(blobs [][]byte) error {
	if len(blobs) != 1 {
		return fmt.Errorf("host call reply: %d byte strings, want the response", len(blobs))
	}
	m.resp = blobs[0]
	return nil
}

// Frame bounds of host calls: the request or response, and room for the
// header (a name, two numbers) and the blob's length.
func maxCallFrame(c jobCall) int64  { return c.MaxRequest + MaxCallNameLen + 64 }
func maxReplyFrame(c jobCall) int64 { return max(c.MaxResponse, maxCallMessage) + 64 }

// readyMsg reports the protections the worker applied to itself before
// receiving a job.
type readyMsg struct {
	// Protocol is the worker's workerProtocol: the parent refuses a
	// worker binary from another build.
	Protocol string
	// Engine is the engine the worker runs jobs with.
	Engine  string
	Applied []string
	Missing map[string]string
}

// lockedMsg reports the protections applied after the job arrived, just
// before the guest starts.
type lockedMsg struct {
	Applied []string
	Missing map[string]string
}

// wireResult is the worker's answer: the report, stdout and stderr as
// blobs, and for each output its name and size in the header and where
// it lies in the output area (its block runs) as a blob. The bytes stay in
// the area, which the parent reads itself.
type wireResult struct {
	Report      Report
	OutputNames []string
	OutputSizes []int64
	// Probes holds the outcome of each forbidden operation the worker
	// attempted in self-test mode (name → error text, "" if it succeeded).
	Probes map[string]string
	// Err is a host-side failure inside the worker.
	Err string

	stdout, stderr []byte
	layouts        [][]byte
}

// newWireResult takes a Result apart for the wire.
func newWireResult(r *Result) wireResult {
	wr := wireResult{Report: r.Report, stdout: r.Stdout, stderr: r.Stderr}
	wr.Report.Outputs = nil // recomputed by the parent from the area
	for _, l := range r.layouts {
		wr.OutputNames = append(wr.OutputNames, l.name)
		wr.OutputSizes = append(wr.OutputSizes, l.size)
		wr.layouts = append(wr.layouts, encodeBlocks(l.blocks))
	}
	return wr
}

// result puts the Result back together, checking every output's place
// in the area against the job's limits (a compromised worker may have
// sent anything): a name the guest could have used, at most
// MaxOutputFiles outputs of at most MaxOutput bytes in all, each on the
// blocks its size needs, inside the area, no block twice.
func (m *wireResult) result(jb *job) (Result, error) {
	r := Result{Report: m.Report, Stdout: m.stdout, Stderr: m.stderr}
	bad := func(format string, args ...any) (Result, error) {
		return Result{}, fmt.Errorf("isolate: the worker sent an invalid result: "+format, args...)
	}
	if len(m.OutputSizes) != len(m.OutputNames) {
		return bad("%d output sizes for %d names", len(m.OutputSizes), len(m.OutputNames))
	}
	if len(m.OutputNames) > jb.MaxOutputFiles {
		return bad("%d outputs, more than the %d allowed", len(m.OutputNames), jb.MaxOutputFiles)
	}
	block, blocks, err := areaLayout(jb.MaxOutput, jb.MaxOutputFiles)
	if err != nil {
		return bad("%v", err)
	}
	used := make([]uint64, (blocks+63)/64)
	seen := map[string]bool{}
	var total int64
	for i, name := range m.OutputNames {
		if err := ValidateInputName(name); err != nil {
			return bad("output name: %v", err)
		}
		if seen[name] {
			return bad("output %q twice", name)
		}
		seen[name] = true
		size := m.OutputSizes[i]
		if size < 0 || size > jb.MaxOutput-total {
			return bad("output %q of %d bytes: more than the %d allowed in all", name, size, jb.MaxOutput)
		}
		total += size
		bs, err := decodeBlocks(m.layouts[i], blocks, (size+block-1)/block, used)
		if err != nil {
			return bad("output %q: %v", name, err)
		}
		r.layouts = append(r.layouts, outputLayout{name: name, size: size, blocks: bs})
	}
	return r, nil
}

func (m *wireResult) wireBlobs() [][]byte {
	return append([][]byte{m.stdout, m.stderr}, m.layouts...)
}

func (m *wireResult) setWireBlobs(blobs [][]byte) error {
	if len(blobs) != 2+len(m.OutputNames) {
		return fmt.Errorf("result frame: %d byte strings for %d outputs", len(blobs), len(m.OutputNames))
	}
	m.stdout, m.stderr, m.layouts = blobs[0], blobs[1], blobs[2:]
	return nil
}

const maxControlFrame = 1 << 20

// encodeFrame encodes m as one frame.
func encodeFrame(m wireMessage) []byte {
	var blobs [][]byte
	if bm, ok := m.(blobMessage); ok {
		// First: wireBlobs may record names the header carries.
		blobs = bm.wireBlobs()
	}
	n := 0
	for _, b := range blobs {
		n += 8 + len(b)
	}
	buf := make([]byte, 12, 12+256+n)
	buf = m.appendWire(buf)
	h := len(buf) - 12
	binary.BigEndian.PutUint64(buf, uint64(4+h+n))
	binary.BigEndian.PutUint32(buf[8:], uint32(h))
	for _, b := range blobs {
		buf = binary.BigEndian.AppendUint64(buf, uint64(len(b)))
		buf = append(buf, b...)
	}
	return buf
}

// writeFrame encodes m and writes it with one write.
func writeFrame(w io.Writer, m wireMessage) error {
	_, err := w.Write(encodeFrame(m))
	return err
}

// sendFrame writes m to the worker's socket with the descriptors files
// attached to its first byte (SCM_RIGHTS), the rest with ordinary writes
// (which honour conn's deadline).
func sendFrame(conn *os.File, m wireMessage, files []*os.File) error {
	buf := encodeFrame(m)
	if len(files) == 0 {
		_, err := conn.Write(buf)
		return err
	}
	fds := make([]int, len(files))
	for i, f := range files {
		rc, err := f.SyscallConn()
		if err != nil {
			return err
		}
		// Control, not Fd: Fd would put a pipe into blocking mode.
		if err := rc.Control(func(fd uintptr) { fds[i] = int(fd) }); err != nil {
			return err
		}
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Write(func(fd uintptr) bool {
		serr = unix.Sendmsg(int(fd), buf[:1], unix.UnixRights(fds...), nil, 0)
		return serr != unix.EAGAIN
	})
	for _, f := range files {
		runtime.KeepAlive(f)
	}
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("sending %d descriptors: %w", len(fds), err)
	}
	_, err = conn.Write(buf[1:])
	return err
}

// recvFrame reads a frame of at most max bytes from the parent's socket
// in (the worker's stdin) into m, with the descriptors attached to its
// first byte. Only the worker calls it, before the lock-down (seccomp
// allows no recvmsg after).
func recvFrame(in *os.File, max int64, m wireMessage) ([]*os.File, error) {
	var first [1]byte
	oob := make([]byte, unix.CmsgSpace(4*maxJobFiles))
	var n, oobn, flags int
	var err error
	for {
		n, oobn, flags, _, err = unix.Recvmsg(int(in.Fd()), first[:], oob, unix.MSG_CMSG_CLOEXEC)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, io.EOF
	}
	var files []*os.File
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return nil, err
		}
		for _, msg := range msgs {
			fds, err := unix.ParseUnixRights(&msg)
			if err != nil {
				return nil, err
			}
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), "job descriptor"))
			}
		}
	}
	if flags&unix.MSG_CTRUNC != 0 {
		return nil, errors.New("more descriptors than a job may have")
	}
	if err := readFrame(io.MultiReader(bytes.NewReader(first[:]), in), max, m); err != nil {
		return nil, err
	}
	return files, nil
}

// readFrameOf reads one frame whose bound depends on its kind: the length,
// the header's length and the kind byte are read first, and the frame is
// refused if it is longer than bound(kind) (0: a kind not expected here),
// before anything is allocated. It returns the kind and the frame's body
// (for decodeFrame).
func readFrameOf(r io.Reader, bound func(kind byte) int64) (byte, []byte, error) {
	var hdr [13]byte
	if _, err := io.ReadFull(r, hdr[:8]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint64(hdr[:8])
	if n < 5 {
		return 0, nil, fmt.Errorf("a frame of %d bytes is shorter than its header", n)
	}
	if _, err := io.ReadFull(r, hdr[8:]); err != nil {
		return 0, nil, err
	}
	kind := hdr[12]
	max := bound(kind)
	if max == 0 {
		return 0, nil, fmt.Errorf("a frame of kind %q where none is expected", kind)
	}
	if n > uint64(max) {
		return 0, nil, fmt.Errorf("a frame of kind %q of %d bytes exceeds its %d-byte bound", kind, n, max)
	}
	b := make([]byte, n)
	copy(b, hdr[8:])
	if _, err := io.ReadFull(r, b[5:]); err != nil {
		return 0, nil, err
	}
	return kind, b, nil
}

// readFrame reads one frame of at most max bytes into m. Blobs alias the
// frame's buffer (one allocation per frame).
func readFrame(r io.Reader, max int64, m wireMessage) error {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint64(hdr[:])
	if n > uint64(max) {
		return fmt.Errorf("frame of %d bytes exceeds the %d-byte bound", n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	return decodeFrame(b, m)
}

// decodeFrame decodes a frame's body (after its length).
func decodeFrame(b []byte, m wireMessage) error {
	if len(b) < 4 {
		return errors.New("decoding frame: shorter than its header")
	}
	h := uint64(binary.BigEndian.Uint32(b))
	b = b[4:]
	if h > uint64(len(b)) {
		return fmt.Errorf("decoding frame: a %d-byte header in %d bytes", h, len(b))
	}
	if err := decodeHeader(b[:h], m); err != nil {
		return fmt.Errorf("decoding frame: %w", err)
	}
	b = b[h:]
	bm, ok := m.(blobMessage)
	if !ok {
		if len(b) != 0 {
			return fmt.Errorf("decoding frame: %d bytes after the header", len(b))
		}
		return nil
	}
	var blobs [][]byte
	for len(b) > 0 {
		if len(b) < 8 {
			return errors.New("decoding frame: truncated byte string length")
		}
		l := binary.BigEndian.Uint64(b)
		b = b[8:]
		if l > uint64(len(b)) {
			return fmt.Errorf("decoding frame: a %d-byte string in %d bytes", l, len(b))
		}
		blobs = append(blobs, b[:l:l])
		b = b[l:]
	}
	if err := bm.setWireBlobs(blobs); err != nil {
		return fmt.Errorf("decoding frame: %w", err)
	}
	return nil
}
