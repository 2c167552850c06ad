package isolate

import (
	"encoding/binary"
	"fmt"
	"time"
)

// The small fields of a frame (protocol.go) are encoded by hand rather
// than with encoding/json: a worker is a fresh process that exchanges four
// frames and exits, and building JSON's reflection-driven codecs for the
// frame types cost it more CPU than everything else it did to talk to the
// parent. The encoding is positional:
//
//	header  = kind byte, then the message's fields in the order below
//	uint    = unsigned varint (binary.AppendUvarint)
//	int     = signed varint
//	bool    = one byte, 0 or 1
//	string  = uint length, bytes
//	list    = uint 0 for nil, else 1+count, then the elements
//	map     = uint 0 for nil, else 1+count, then key, value pairs (keys sorted)
//	[32]byte = 32 bytes
//
// A list or map keeps the difference between nil and empty, which JSON
// kept too (a report's "outputs": [] against null). The parent reads
// frames from a worker that may be compromised, so every length and count
// is checked against what is left of the frame before anything is
// allocated (FuzzReadFrame). Adding a field to a message type changes the
// protocol identifier (workerProtocol describes the types), and the codec
// test fills every field, so a field left out of the codec fails it.

// Message kinds: the first byte of a frame's header.
const (
	kindReady  = 'R'
	kindInput  = 'I'
	kindLocked = 'L'
	kindResult = 'W'
	kindCall   = 'C' // worker → parent: a host call
	kindReply  = 'A' // parent → worker: its answer
	kindSecret = 'K' // parent → worker: the job's keys
)

// wireMessage is a message that can travel in a frame.
type wireMessage interface {
	// appendWire appends the header (kind byte first).
	appendWire(b []byte) []byte
	// readWire decodes a header appendWire wrote.
	readWire(d *wireDecoder)
}

func appendUint(b []byte, v uint64) []byte { return binary.AppendUvarint(b, v) }
func appendInt(b []byte, v int64) []byte   { return binary.AppendVarint(b, v) }

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendString(b []byte, s string) []byte {
	return append(appendUint(b, uint64(len(s))), s...)
}

// appendCount writes a list's or map's count, keeping nil apart.
func appendCount(b []byte, n int, isNil bool) []byte {
	if isNil {
		return append(b, 0)
	}
	return appendUint(b, uint64(n)+1)
}

func appendStrings(b []byte, ss []string) []byte {
	b = appendCount(b, len(ss), ss == nil)
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

func appendInts(b []byte, vs []int64) []byte {
	b = appendCount(b, len(vs), vs == nil)
	for _, v := range vs {
		b = appendInt(b, v)
	}
	return b
}

func appendStringMap(b []byte, m map[string]string) []byte {
	b = appendCount(b, len(m), m == nil)
	for _, k := range sortedKeys(m) {
		b = appendString(appendString(b, k), m[k])
	}
	return b
}

// wireDecoder reads a header. The first error sticks: later reads return
// zero values, and err says what was wrong first.
type wireDecoder struct {
	b   []byte
	err error
}

func (d *wireDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
}

func (d *wireDecoder) kind(want byte, what string) {
	if d.err != nil {
		return
	}
	if len(d.b) == 0 {
		d.fail("empty %s header", what)
		return
	}
	if d.b[0] != want {
		d.fail("a message of kind %q where a %s was expected (a worker binary from another build?)", d.b[0], what)
		return
	}
	d.b = d.b[1:]
}

func (d *wireDecoder) uint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad unsigned integer")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wireDecoder) int() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad integer")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *wireDecoder) bool() bool {
	if d.err != nil {
		return false
	}
	if len(d.b) == 0 || d.b[0] > 1 {
		d.fail("bad boolean")
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

func (d *wireDecoder) string() string {
	n := d.uint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail("a %d-byte string in %d bytes", n, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *wireDecoder) sum() (v [32]byte) {
	if d.err != nil {
		return v
	}
	if len(d.b) < len(v) {
		d.fail("truncated digest")
		return v
	}
	copy(v[:], d.b)
	d.b = d.b[len(v):]
	return v
}

// maxWireHeader bounds a frame's header: its fields are names, numbers and
// short reasons (the large byte strings are blobs), so with every count
// bounded by what is left of it, a hostile worker cannot make the parent
// allocate more than a small multiple of this.
const maxWireHeader = 1 << 20

// maxWireCount bounds the number of elements of one list or map.
const maxWireCount = 1 << 16

// count reads a list's or map's count; every element takes at least
// minSize bytes, so a count the rest of the header cannot hold is refused
// before anything is allocated, as is one above maxWireCount.
func (d *wireDecoder) count(minSize int) (n int, isNil bool) {
	v := d.uint()
	if d.err != nil || v == 0 {
		return 0, true
	}
	v--
	if v > uint64(len(d.b)/minSize) || v > maxWireCount {
		d.fail("a list of %d elements in %d bytes", v, len(d.b))
		return 0, true
	}
	return int(v), false
}

func (d *wireDecoder) strings() []string {
	n, isNil := d.count(1)
	if isNil {
		return nil
	}
	ss := make([]string, n)
	for i := range ss {
		ss[i] = d.string()
	}
	return ss
}

func (d *wireDecoder) ints() []int64 {
	n, isNil := d.count(1)
	if isNil {
		return nil
	}
	vs := make([]int64, n)
	for i := range vs {
		vs[i] = d.int()
	}
	return vs
}

func (d *wireDecoder) stringMap() map[string]string {
	n, isNil := d.count(2)
	if isNil {
		return nil
	}
	m := map[string]string{} // not sized by the sender's count
	for range n {
		k := d.string()
		if _, dup := m[k]; dup && d.err == nil {
			d.fail("key %q twice", k)
		}
		m[k] = d.string()
	}
	return m
}

// decodeHeader decodes a frame header into m, which must use all of it.
func decodeHeader(b []byte, m wireMessage) error {
	if len(b) > maxWireHeader {
		return fmt.Errorf("a %d-byte header exceeds the %d-byte bound", len(b), maxWireHeader)
	}
	d := &wireDecoder{b: b}
	m.readWire(d)
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes left after the header", len(d.b))
	}
	return d.err
}

func (m *readyMsg) appendWire(b []byte) []byte {
	b = append(b, kindReady)
	b = appendString(b, m.Protocol)
	b = appendString(b, m.Engine)
	b = appendStrings(b, m.Applied)
	return appendStringMap(b, m.Missing)
}

func (m *readyMsg) readWire(d *wireDecoder) {
	d.kind(kindReady, "ready message")
	m.Protocol = d.string()
	m.Engine = d.string()
	m.Applied = d.strings()
	m.Missing = d.stringMap()
}

func (m *lockedMsg) appendWire(b []byte) []byte {
	b = append(b, kindLocked)
	b = appendStrings(b, m.Applied)
	return appendStringMap(b, m.Missing)
}

func (m *lockedMsg) readWire(d *wireDecoder) {
	d.kind(kindLocked, "lock-down message")
	m.Applied = d.strings()
	m.Missing = d.stringMap()
}

// A workerInput header is its kind, then 0 (a preload: the module is the
// only blob) or 1 and the job's fields.
func (m *workerInput) appendWire(b []byte) []byte {
	b = append(b, kindInput)
	b = appendBool(b, m.PreloadDeterministic)
	j := m.Job
	if j == nil {
		return append(b, 0)
	}
	b = append(b, 1)
	b = append(b, j.ModuleSHA256[:]...)
	b = appendString(b, j.Name)
	b = appendStrings(b, j.Args)
	b = appendStrings(b, j.Env)
	b = appendStrings(b, j.InputNames)
	b = appendCount(b, len(j.Calls), j.Calls == nil)
	for _, c := range j.Calls {
		b = appendString(b, c.Name)
		b = appendInt(b, c.MaxRequest)
		b = appendInt(b, c.MaxResponse)
	}
	b = appendBool(b, j.Sealed)
	b = appendStrings(b, j.SealedInputs)
	b = appendUint(b, j.Memory)
	b = appendInt(b, int64(j.Timeout))
	b = appendInt(b, j.MaxOutput)
	b = appendInt(b, int64(j.MaxOutputFiles))
	b = appendInt(b, j.MaxStdio)
	b = appendBool(b, j.Deterministic)
	b = append(b, j.Seed[:]...)
	b = appendString(b, j.ConformanceRoot)
	b = appendBool(b, j.Cancel)
	return appendBool(b, j.SelfTest)
}

func (m *workerInput) readWire(d *wireDecoder) {
	d.kind(kindInput, "job message")
	m.PreloadDeterministic = d.bool()
	if !d.bool() || d.err != nil {
		return
	}
	j := &job{}
	j.ModuleSHA256 = d.sum()
	j.Name = d.string()
	j.Args = d.strings()
	j.Env = d.strings()
	j.InputNames = d.strings()
	if n, isNil := d.count(3); !isNil {
		j.Calls = make([]jobCall, n)
		for i := range j.Calls {
			j.Calls[i] = jobCall{Name: d.string(), MaxRequest: d.int(), MaxResponse: d.int()}
		}
	}
	j.Sealed = d.bool()
	j.SealedInputs = d.strings()
	j.Memory = d.uint()
	j.Timeout = time.Duration(d.int())
	j.MaxOutput = d.int()
	j.MaxOutputFiles = int(d.int())
	j.MaxStdio = d.int()
	j.Deterministic = d.bool()
	j.Seed = d.sum()
	j.ConformanceRoot = d.string()
	j.Cancel = d.bool()
	j.SelfTest = d.bool()
	m.Job = j
}

func (m *wireResult) appendWire(b []byte) []byte {
	b = append(b, kindResult)
	r := &m.Report
	b = appendString(b, string(r.Outcome))
	b = appendInt(b, int64(r.ExitCode))
	b = appendInt(b, r.WallMS)
	b = appendString(b, r.ProgramSHA256)
	b = appendCount(b, len(r.Outputs), r.Outputs == nil)
	for _, o := range r.Outputs {
		b = appendString(b, o.Name)
		b = appendInt(b, o.Bytes)
		b = appendString(b, o.SHA256)
	}
	b = appendStrings(b, r.Protections)
	b = appendStringMap(b, r.Missing)
	b = appendString(b, r.Error)
	b = appendBool(b, r.StdoutTruncated)
	b = appendBool(b, r.StderrTruncated)
	b = appendBool(b, r.Deterministic)
	b = appendBool(b, r.OutputLimited)
	b = appendStrings(b, r.OutputLimitsHit)
	b = appendStrings(b, r.Warnings)
	b = appendInt(b, r.HostCalls)
	b = appendString(b, r.Engine)
	b = appendInt(b, r.HostPrimitives)
	b = appendStrings(b, m.OutputNames)
	b = appendInts(b, m.OutputSizes)
	b = appendStringMap(b, m.Probes)
	return appendString(b, m.Err)
}

func (m *wireResult) readWire(d *wireDecoder) {
	d.kind(kindResult, "result message")
	r := &m.Report
	r.Outcome = Outcome(d.string())
	r.ExitCode = int(d.int())
	r.WallMS = d.int()
	r.ProgramSHA256 = d.string()
	if n, isNil := d.count(3); !isNil {
		r.Outputs = make([]OutputInfo, n)
		for i := range r.Outputs {
			r.Outputs[i] = OutputInfo{Name: d.string(), Bytes: d.int(), SHA256: d.string()}
		}
	}
	r.Protections = d.strings()
	r.Missing = d.stringMap()
	r.Error = d.string()
	r.StdoutTruncated = d.bool()
	r.StderrTruncated = d.bool()
	r.Deterministic = d.bool()
	r.OutputLimited = d.bool()
	r.OutputLimitsHit = d.strings()
	r.Warnings = d.strings()
	r.HostCalls = d.int()
	r.Engine = d.string()
	r.HostPrimitives = d.int()
	m.OutputNames = d.strings()
	m.OutputSizes = d.ints()
	m.Probes = d.stringMap()
	m.Err = d.string()
}

func (m *callMsg) appendWire(b []byte) []byte {
	b = append(b, kindCall)
	b = appendUint(b, m.Seq)
	return appendString(b, m.Name)
}

func (m *callMsg) readWire(d *wireDecoder) {
	d.kind(kindCall, "host call")
	m.Seq = d.uint()
	m.Name = d.string()
}

func (m *replyMsg) appendWire(b []byte) []byte {
	b = append(b, kindReply)
	b = appendUint(b, m.Seq)
	return appendUint(b, uint64(m.Status))
}

func (m *replyMsg) readWire(d *wireDecoder) {
	d.kind(kindReply, "host call reply")
	m.Seq = d.uint()
	m.Status = uint32(d.uint())
}

func (m *secretMsg) appendWire(b []byte) []byte {
	b = append(b, kindSecret)
	return appendStrings(b, m.Names)
}

func (m *secretMsg) readWire(d *wireDecoder) {
	d.kind(kindSecret, "secret frame")
	m.Names = d.strings()
}
