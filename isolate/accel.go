package isolate

import (
	"bytes"
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"hash"
	"math"
	"math/bits"
	"slices"
	"sync/atomic"
	"time"
)

// AccelModule is the import module of the host-accelerated primitives,
// versioned in its name (the ABI: docs/isolate.md, "Host primitives";
// Go programs use package guest/crypto, C and Rust the header
// guest/c/cloister_accel.h). A primitive runs in the worker itself, on the
// guest's own memory: no round trip to the node, no handler, nothing the
// guest could not compute itself — only faster, with the CPU's AES and SHA
// instructions that Wasm lacks. Every primitive but the floating-point one
// (matmul_f64, refused in deterministic runs) is deterministic, works only
// within the guest's memory, whose size the memory ceiling bounds, and
// runs inside the job's deadline; the report counts the calls
// (Report.HostPrimitives).
const AccelModule = "cloister_accel_v1"

// Status values of the primitives.
const (
	AccelOK         = 0 // done
	AccelBadArg     = 1 // a range outside the guest's memory, a wrong key or nonce size, an output too small
	AccelAuthFailed = 2 // aes_gcm_open: the tag does not match; ed25519_verify: the signature is not valid
	// AccelNotDeterministic: matmul_f64 in a deterministic run. A float
	// kernel's bits may differ between CPUs (or a later, vectorised
	// host), so a run that promises the same bytes everywhere does not
	// get one (decision 0149).
	AccelNotDeterministic = 3
	// AccelBeyondLimits: matmul_f64's work is beyond what the run's
	// deadline allows, or the deadline passed while it worked.
	AccelBeyondLimits = 4
)

// accelFunctions are the primitives, each taking i32 parameters and
// returning an i32 status:
//
//	sha256(data_ptr, data_len, out_ptr)                       32 bytes at out_ptr
//	aes_gcm_seal(key_ptr, key_len, nonce_ptr, in_ptr, in_len, ad_ptr, ad_len, out_ptr)
//	                                                          in_len+16 bytes at out_ptr
//	aes_gcm_open(key_ptr, key_len, nonce_ptr, in_ptr, in_len, ad_ptr, ad_len, out_ptr)
//	                                                          in_len-16 bytes at out_ptr
//	ed25519_verify(pub_ptr, msg_ptr, msg_len, sig_ptr)        0 valid, 2 not (32-byte key, 64-byte signature)
//	sort_u64(ptr, n) / sort_i64(ptr, n)                       n little-endian 8-byte integers sorted in place
//	sha256_init(state_ptr)                                    a fresh SHA256StateSize-byte state at state_ptr
//	sha256_update(state_ptr, data_ptr, data_len)              the state advanced over the data
//	sha256_final(state_ptr, out_ptr)                          32 bytes at out_ptr; the state is left as it was
//	matmul_f64(a_ptr, b_ptr, c_ptr, m, k, n)                  c (m×n) = a (m×k) · b (k×n), row-major float64
//
// AES-GCM takes 16-, 24- or 32-byte keys and 12-byte nonces; in and out
// may be the same range. The SHA-256 state is opaque to the guest: a
// state the host did not write is refused (status 1).
var accelFunctions = map[string]struct {
	params int
	fn     func(mem []byte, a []uint64) uint32
	// run, if set, is called instead of fn: a primitive that needs the
	// run's limits.
	run func(c *accelCounter, mem []byte, a []uint64) uint32
}{
	"sha256":       {3, accelSHA256, nil},
	"aes_gcm_seal": {8, func(mem []byte, a []uint64) uint32 { return accelGCM(mem, a, true) }, nil},
	"aes_gcm_open": {8, func(mem []byte, a []uint64) uint32 { return accelGCM(mem, a, false) }, nil},
	// Added to v1 without changing its meaning: a program importing
	// only the first three runs as before (decision 0144).
	"ed25519_verify": {4, accelEd25519, nil},
	"sort_u64":       {2, func(mem []byte, a []uint64) uint32 { return accelSort(mem, a, false) }, nil},
	"sort_i64":       {2, func(mem []byte, a []uint64) uint32 { return accelSort(mem, a, true) }, nil},
	// Streaming SHA-256, added to v1 likewise (decision 0146): a guest
	// hashes data as it comes instead of gathering it in one buffer.
	"sha256_init":   {1, accelSHA256Init, nil},
	"sha256_update": {3, accelSHA256Update, nil},
	"sha256_final":  {2, accelSHA256Final, nil},
	// Dense matrix multiply, added to v1 likewise (decision 0149); fn
	// only marks it as offered, run does the work.
	"matmul_f64": {6, func([]byte, []uint64) uint32 { return AccelBadArg }, accelMatMul},
}

// SHA256StateSize is the size of the state sha256_init writes into the
// guest's memory: Go's encoding of a SHA-256 digest (108 bytes), zero
// padded.
const SHA256StateSize = 128

// sha256State decodes the state at a[0]; ok is false for a range
// outside memory or bytes that are not a state.
func sha256State(mem []byte, a []uint64) (state []byte, h hash.Hash, ok bool) {
	state, ok = memRange(mem, a[0], SHA256StateSize)
	if !ok {
		return nil, nil, false
	}
	h = sha256.New()
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state[:sha256Marshaled]); err != nil {
		return nil, nil, false
	}
	return state, h, true
}

// sha256Marshaled is the length of Go's encoding of a SHA-256 digest.
const sha256Marshaled = 108

func putSHA256State(state []byte, h hash.Hash) {
	b, _ := h.(encoding.BinaryAppender).AppendBinary(state[:0:sha256Marshaled])
	clear(state[len(b):])
}

func accelSHA256Init(mem []byte, a []uint64) uint32 {
	state, ok := memRange(mem, a[0], SHA256StateSize)
	if !ok {
		return AccelBadArg
	}
	putSHA256State(state, sha256.New())
	return AccelOK
}

func accelSHA256Update(mem []byte, a []uint64) uint32 {
	data, ok := memRange(mem, a[1], a[2])
	if !ok {
		return AccelBadArg
	}
	state, h, ok := sha256State(mem, a)
	if !ok {
		return AccelBadArg
	}
	// The data may overlap the state: it is read before the state is
	// written.
	h.Write(data)
	putSHA256State(state, h)
	return AccelOK
}

func accelSHA256Final(mem []byte, a []uint64) uint32 {
	out, ok := memRange(mem, a[1], sha256.Size)
	if !ok {
		return AccelBadArg
	}
	_, h, ok := sha256State(mem, a)
	if !ok {
		return AccelBadArg
	}
	var sum [sha256.Size]byte
	copy(out, h.Sum(sum[:0]))
	return AccelOK
}

// accelCounter counts one run's primitive calls and holds the limits the
// primitives that need them (matmul_f64) work within.
type accelCounter struct {
	calls atomic.Int64

	ctx           context.Context // the run's: cancelled when it ends (nil: never)
	deadline      time.Time       // the run's wall-clock limit (zero: none)
	deterministic bool            // a deterministic run: no floating-point primitive
}

// newAccelCounter is the counter of a run of j starting now.
func newAccelCounter(ctx context.Context, j *job) *accelCounter {
	c := &accelCounter{ctx: ctx, deterministic: j.Deterministic}
	if j.Timeout > 0 {
		c.deadline = time.Now().Add(j.Timeout)
	}
	return c
}

// expired says whether the run's deadline has passed or its context ended.
func (c *accelCounter) expired() bool {
	return c.ctx != nil && c.ctx.Err() != nil || !c.deadline.IsZero() && time.Now().After(c.deadline)
}

// call runs the primitive name on mem (a view of the guest's memory).
func (c *accelCounter) call(name string, mem []byte, a []uint64) uint32 {
	c.calls.Add(1)
	for i := range a {
		a[i] = uint64(uint32(a[i]))
	}
	if f := accelFunctions[name]; f.run != nil {
		return f.run(c, mem, a)
	}
	return accelFunctions[name].fn(mem, a)
}

func accelSHA256(mem []byte, a []uint64) uint32 {
	data, ok := memRange(mem, a[0], a[1])
	out, ok2 := memRange(mem, a[2], sha256.Size)
	if !ok || !ok2 {
		return AccelBadArg
	}
	sum := sha256.Sum256(data)
	copy(out, sum[:])
	return AccelOK
}

func accelGCM(mem []byte, a []uint64, seal bool) uint32 {
	key, ok1 := memRange(mem, a[0], a[1])
	nonce, ok2 := memRange(mem, a[2], 12)
	in, ok3 := memRange(mem, a[3], a[4])
	ad, ok4 := memRange(mem, a[5], a[6])
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return AccelBadArg
	}
	outLen := a[4] + 16
	if !seal {
		if a[4] < 16 {
			return AccelAuthFailed
		}
		outLen = a[4] - 16
	}
	out, ok := memRange(mem, a[7], outLen)
	if !ok {
		return AccelBadArg
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return AccelBadArg
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return AccelBadArg
	}
	// The ranges are the guest's and may overlap in any way; the AEAD
	// works in place (in and out starting at the same byte) or on
	// disjoint ranges and panics on other overlaps. The nonce and the
	// associated data are copied (they are small, and out may cover
	// them); in is copied only when it overlaps out otherwise, so that
	// sealing in place or into a buffer of its own costs no copy of the
	// message (decision 0146).
	nonce, ad = bytes.Clone(nonce), bytes.Clone(ad)
	if a[3] != a[7] && a[3] < a[7]+outLen && a[7] < a[3]+a[4] {
		in = bytes.Clone(in)
	}
	if seal {
		gcm.Seal(out[:0], nonce, in, ad)
	} else if _, err = gcm.Open(out[:0], nonce, in, ad); err != nil {
		clear(out)
		return AccelAuthFailed
	}
	return AccelOK
}

// accelEd25519 verifies an Ed25519 signature (RFC 8032, the standard
// library's rules: the same answer on every machine).
func accelEd25519(mem []byte, a []uint64) uint32 {
	pub, ok1 := memRange(mem, a[0], ed25519.PublicKeySize)
	msg, ok2 := memRange(mem, a[1], a[2])
	sig, ok3 := memRange(mem, a[3], ed25519.SignatureSize)
	if !ok1 || !ok2 || !ok3 {
		return AccelBadArg
	}
	if ed25519.Verify(ed25519.PublicKey(pub), msg, sig) {
		return AccelOK
	}
	return AccelAuthFailed
}

// accelSort sorts n 8-byte little-endian integers in place, unsigned or
// signed: one answer for every input, so deterministic. It uses 8n bytes
// of worker memory beside the guest's (n is bounded by the guest's
// memory) and O(n log n) time, inside the run's deadline.
func accelSort(mem []byte, a []uint64, signed bool) uint32 {
	b, ok := memRange(mem, a[0], a[1]*8)
	if !ok {
		return AccelBadArg
	}
	v := make([]uint64, a[1])
	for i := range v {
		v[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	if signed {
		slices.SortFunc(v, func(x, y uint64) int { return cmp.Compare(int64(x), int64(y)) })
	} else {
		slices.Sort(v)
	}
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], x)
	}
	return AccelOK
}

// matmulRate is the multiply-adds per second of wall clock that bound a
// matmul_f64 call before it starts: a few times what one core does with
// the loop below, so a product refused at this rate could not have been
// finished inside the run's deadline anyway.
const matmulRate = 1 << 32

// matmulBlock is about how many multiply-adds matmul_f64 does between two
// looks at the run's deadline (a few milliseconds of work).
const matmulBlock = 1 << 22

// accelMatMul writes c = a·b for row-major float64 matrices a (m×k), b
// (k×n), c (m×n) in the guest's memory, little-endian, at any alignment.
// Every range is checked before any work: each inside memory, c
// overlapping neither a nor b (status 1). It is refused in deterministic
// runs (status 3) and when m·k·n is beyond the run's deadline at
// matmulRate (status 4); it stops between blocks of rows when the
// deadline passes (status 4, c partly written). The loop is the plain
// i-k-j one with every product rounded before it is added (no fused
// multiply-add), so the bits are those of the same loop compiled to Wasm;
// it uses 8·k·n bytes of worker memory beside the guest's (a copy of b).
func accelMatMul(c *accelCounter, mem []byte, a []uint64) uint32 {
	m, k, n := a[3], a[4], a[5]
	elems := uint64(len(mem)) / 8
	mkHi, mk := bits.Mul64(m, k)
	knHi, kn := bits.Mul64(k, n)
	mnHi, mn := bits.Mul64(m, n)
	if mkHi|knHi|mnHi != 0 || mk > elems || kn > elems || mn > elems {
		return AccelBadArg
	}
	am, ok1 := memRange(mem, a[0], 8*mk)
	bm, ok2 := memRange(mem, a[1], 8*kn)
	cm, ok3 := memRange(mem, a[2], 8*mn)
	if !ok1 || !ok2 || !ok3 || rangesOverlap(a[2], 8*mn, a[0], 8*mk) || rangesOverlap(a[2], 8*mn, a[1], 8*kn) {
		return AccelBadArg
	}
	if c.deterministic {
		return AccelNotDeterministic
	}
	// mk ≤ len(mem)/8 < 2^61 and n < 2^32: the product may overflow.
	hi, work := bits.Mul64(mk, n)
	if hi != 0 || !c.deadline.IsZero() && work > uint64(max(0, time.Until(c.deadline).Seconds())*matmulRate) {
		return AccelBeyondLimits
	}
	b := make([]float64, kn)
	for i := range b {
		b[i] = math.Float64frombits(binary.LittleEndian.Uint64(bm[8*i:]))
	}
	row := make([]float64, n)
	rowsPerBlock := max(1, matmulBlock/max(1, kn))
	for i := range m {
		if i%rowsPerBlock == 0 && i > 0 && c.expired() {
			return AccelBeyondLimits
		}
		clear(row)
		ai := am[8*i*k : 8*(i+1)*k]
		for p := range k {
			aip := math.Float64frombits(binary.LittleEndian.Uint64(ai[8*p:]))
			bp := b[p*n : (p+1)*n]
			for j := range row {
				row[j] += float64(aip * bp[j])
			}
		}
		ci := cm[8*i*n : 8*(i+1)*n]
		for j, v := range row {
			binary.LittleEndian.PutUint64(ci[8*j:], math.Float64bits(v))
		}
	}
	return AccelOK
}

// rangesOverlap says whether the non-empty ranges [p, p+pn) and [q, q+qn)
// share a byte.
func rangesOverlap(p, pn, q, qn uint64) bool {
	return pn != 0 && qn != 0 && p < q+qn && q < p+pn
}
