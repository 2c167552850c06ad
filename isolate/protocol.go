package isolate

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"io"
)

// The parent and the worker exchange length-prefixed gob frames over two
// pipes (the worker's stdin and stdout):
//
//	worker → parent  readyMsg     after the pre-job jail is in place
//	parent → worker  workerInput  {Preload}: optional, to a warm worker
//	parent → worker  workerInput  {Job}
//	worker → parent  lockedMsg    after rlimits, no_new_privs and seccomp
//	worker → parent  wireResult
//
// The parent bounds every frame it reads: the worker runs hostile code and
// may be compromised by it, so its frames are untrusted input.

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

// readyMsg reports the protections the worker applied to itself before
// receiving a job.
type readyMsg struct {
	Applied []string
	Missing map[string]string
}

// lockedMsg reports the protections applied after the job arrived, just
// before the guest starts.
type lockedMsg struct {
	Applied []string
	Missing map[string]string
}

// wireResult is the worker's answer.
type wireResult struct {
	Result Result
	// Probes holds the outcome of each forbidden operation the worker
	// attempted in self-test mode (name → error text, "" if it succeeded).
	Probes map[string]string
	// Err is a host-side failure inside the worker.
	Err string
}

const maxControlFrame = 1 << 20

func writeFrame(w io.Writer, v any) error {
	var buf bytes.Buffer
	buf.Write(make([]byte, 8))
	if err := gob.NewEncoder(&buf).Encode(v); err != nil {
		return err
	}
	b := buf.Bytes()
	binary.BigEndian.PutUint64(b[:8], uint64(len(b)-8))
	_, err := w.Write(b)
	return err
}

func readFrame(r io.Reader, max int64, v any) error {
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
	if err := gob.NewDecoder(bytes.NewReader(b)).Decode(v); err != nil {
		return fmt.Errorf("decoding frame: %w", err)
	}
	return nil
}
