package isolate

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
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
	Job     *job
}

func (m *workerInput) wireBlobs() [][]byte {
	if m.Job == nil {
		return [][]byte{m.Preload}
	}
	j := m.Job
	j.InputNames = sortedKeys(j.Inputs)
	blobs := make([][]byte, 0, 1+len(j.Inputs))
	blobs = append(blobs, j.Module)
	for _, n := range j.InputNames {
		blobs = append(blobs, j.Inputs[n])
	}
	return blobs
}

func (m *workerInput) setWireBlobs(blobs [][]byte) error {
	if m.Job == nil {
		if len(blobs) != 1 || len(blobs[0]) == 0 {
			return errors.New("a preload frame holds no module")
		}
		m.Preload = blobs[0]
		return nil
	}
	j := m.Job
	if len(blobs) != 1+len(j.InputNames) {
		return fmt.Errorf("job frame: %d byte strings for %d inputs", len(blobs), len(j.InputNames))
	}
	if len(blobs[0]) > 0 { // empty: the worker holds the module (preload)
		j.Module = blobs[0]
	}
	j.Inputs = make(map[string][]byte, len(j.InputNames))
	for i, n := range j.InputNames {
		if _, dup := j.Inputs[n]; dup {
			return fmt.Errorf("job frame: input %q twice", n)
		}
		j.Inputs[n] = blobs[1+i]
	}
	return nil
}

// readyMsg reports the protections the worker applied to itself before
// receiving a job.
type readyMsg struct {
	// Protocol is the worker's workerProtocol: the parent refuses a
	// worker binary from another build.
	Protocol string
	Applied  []string
	Missing  map[string]string
}

// lockedMsg reports the protections applied after the job arrived, just
// before the guest starts.
type lockedMsg struct {
	Applied []string
	Missing map[string]string
}

// wireResult is the worker's answer: a Result, with stdout, stderr and the
// outputs' bytes as blobs.
type wireResult struct {
	Report      Report
	OutputNames []string
	// Probes holds the outcome of each forbidden operation the worker
	// attempted in self-test mode (name → error text, "" if it succeeded).
	Probes map[string]string
	// Err is a host-side failure inside the worker.
	Err string

	stdout, stderr []byte
	outputs        [][]byte
}

// newWireResult takes a Result apart for the wire.
func newWireResult(r *Result) wireResult {
	wr := wireResult{Report: r.Report, stdout: r.Stdout, stderr: r.Stderr}
	for _, o := range r.Outputs {
		wr.OutputNames = append(wr.OutputNames, o.Name)
		wr.outputs = append(wr.outputs, o.Data)
	}
	return wr
}

// result puts the Result back together.
func (m *wireResult) result() Result {
	r := Result{Report: m.Report, Stdout: m.stdout, Stderr: m.stderr, Outputs: make([]Output, len(m.outputs))}
	for i := range m.outputs {
		r.Outputs[i] = Output{Name: m.OutputNames[i], Data: m.outputs[i]}
	}
	return r
}

func (m *wireResult) wireBlobs() [][]byte {
	return append([][]byte{m.stdout, m.stderr}, m.outputs...)
}

func (m *wireResult) setWireBlobs(blobs [][]byte) error {
	if len(blobs) != 2+len(m.OutputNames) {
		return fmt.Errorf("result frame: %d byte strings for %d outputs", len(blobs), len(m.OutputNames))
	}
	m.stdout, m.stderr, m.outputs = blobs[0], blobs[1], blobs[2:]
	return nil
}

const maxControlFrame = 1 << 20

// writeFrame encodes m and writes it with one write.
func writeFrame(w io.Writer, m wireMessage) error {
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
	_, err := w.Write(buf)
	return err
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
