package isolate

import (
	"bytes"
	"cmp"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/workerbuild"
)

// testEngine is the engine newRuntime gives runtimes that do not name
// one: wazero, or wasmtime while TestEngineWasmtime replays the suites.
var testEngine = EngineWazero

var (
	wasmtimeOnce sync.Once
	wasmtimePath string
	wasmtimeErr  error
)

// wasmtimeWorker builds cmd/cloister-isolate-wasmtime once per test run.
func wasmtimeWorker(t testing.TB) string {
	t.Helper()
	wasmtimeOnce.Do(func() {
		start := time.Now()
		wasmtimePath, wasmtimeErr = workerbuild.BuildWasmtime()
		t.Logf("built cloister-isolate-wasmtime in %v", time.Since(start).Round(time.Millisecond))
	})
	if wasmtimeErr != nil {
		t.Fatal(wasmtimeErr)
	}
	return wasmtimePath
}

// TestEngineWasmtime runs the hostile-guest suite and the WASI-facing
// tests again with the wasmtime engine, through its own worker binary
// (in-process parts need the cloister_wasmtime tag and skip without it;
// scripts/test runs this package with the tag too).
func TestEngineWasmtime(t *testing.T) {
	wasmtimeWorker(t)
	testEngine = EngineWasmtime
	defer func() { testEngine = EngineWazero }()
	for _, tc := range []struct {
		name string
		f    func(*testing.T)
	}{
		{"ReportNamesEngine", testReportNamesEngine},
		{"WASIConformance", TestWASIConformance},
		{"EmptyAndTrap", TestEmptyAndTrap},
		{"HostileInfiniteLoop", TestHostileInfiniteLoop},
		{"HostileDeepRecursion", TestHostileDeepRecursion},
		{"HostileMemory", TestHostileMemory},
		{"HostileOutputFlood", TestHostileOutputFlood},
		{"HostileManyFiles", TestHostileManyFiles},
		{"HostileFileSystemEscape", TestHostileFileSystemEscape},
		{"HostileWriteInput", TestHostileWriteInput},
		{"HostileNetworkDial", TestHostileNetworkDial},
		{"InvalidModules", TestInvalidModules},
		{"BadInputsAndEnv", TestBadInputsAndEnv},
		{"ExitStatusPassThrough", TestExitStatusPassThrough},
		{"Determinism", TestDeterminism},
		{"WarmPool", TestWarmPool},
		{"CacheEntryAuthenticated", TestCacheEntryAuthenticated},
		{"CacheEntryUsed", TestCacheEntryUsed},
	} {
		t.Run(tc.name, tc.f)
	}
}

func testReportNamesEngine(t *testing.T) {
	r := newRuntime(t, Options{})
	res := mustRun(t, r, &Config{Module: wasmExit(0)})
	if want := "wasmtime 39.0.1"; res.Report.Engine != want {
		t.Errorf("report engine %q, want %q", res.Report.Engine, want)
	}
	if !hasString(res.Report.Protections, "seccomp") {
		t.Errorf("protections %v: no seccomp", res.Report.Protections)
	}
}

// TestEnginesAgreeBytes runs a deterministic Go program working on
// integers and fixed-point numbers under both engines: stdout and every
// output must be identical bytes.
func TestEnginesAgreeBytes(t *testing.T) {
	mod := hostileGuest(t)
	for _, prog := range []string{"determinism", "fixedpoint"} {
		t.Run(prog, func(t *testing.T) { enginesAgree(t, mod, prog) })
	}
}

func enginesAgree(t *testing.T, mod []byte, prog string) {
	run := func(engine string) *Result {
		r := newRuntime(t, Options{Engine: engine})
		cfg := &Config{Module: mod, Name: prog, Deterministic: true, Inputs: []Input{{Name: "data", Data: []byte("same input")}}, Timeout: time.Minute}
		cfg.Seed[0] = 7
		res := mustRun(t, r, cfg)
		wantOutcome(t, res, OutcomeExited, 0)
		return res
	}
	a, b := run(EngineWazero), run(EngineWasmtime)
	if !bytes.Equal(a.Stdout, b.Stdout) {
		t.Errorf("stdout differs:\nwazero:\n%s\nwasmtime:\n%s", a.Stdout, b.Stdout)
	}
	if len(a.Outputs) != len(b.Outputs) {
		t.Fatalf("%d outputs under wazero, %d under wasmtime", len(a.Outputs), len(b.Outputs))
	}
	for i := range a.Outputs {
		if !bytes.Equal(outputBytes(t, a.Outputs[i]), outputBytes(t, b.Outputs[i])) {
			t.Errorf("output %s differs", a.Outputs[i].Name)
		}
	}
	if a.Report.Engine == b.Report.Engine {
		t.Errorf("both reports name %q", a.Report.Engine)
	}
}

// TestHostPrimitives runs a guest that compares every host primitive
// (guest/crypto, guest/hostsort, guest/hostmat) with the standard library
// or the same loop compiled to Wasm, on 300 random inputs, under each
// engine; the report counts the calls.
func TestHostPrimitives(t *testing.T) {
	mod := hostileGuest(t)
	for _, engine := range []string{EngineWazero, EngineWasmtime} {
		t.Run(engine, func(t *testing.T) {
			res := mustRun(t, newRuntime(t, Options{Engine: engine}), &Config{Module: mod, Name: "accel", Timeout: 2 * time.Minute})
			wantOutcome(t, res, OutcomeExited, 0)
			if !bytes.HasPrefix(res.Stdout, []byte("agree: 300 rounds")) {
				t.Errorf("stdout %q", res.Stdout)
			}
			// Per round: a digest, a seal, an open, a tampered open, two
			// verifications, and two sorts (but of 0 or 1 integers).
			if res.Report.HostPrimitives < 6*300 {
				t.Errorf("report counts %d primitive calls, want at least 1800", res.Report.HostPrimitives)
			}
		})
	}
	// In a deterministic run the host refuses matmul_f64 (status 3) and
	// guest/hostmat computes the same bits in the guest: the guest's
	// comparisons still agree.
	t.Run("deterministic", func(t *testing.T) {
		res := mustRun(t, newRuntime(t, Options{Engine: EngineWazero}), &Config{Module: mod, Name: "accel", Deterministic: true, Timeout: 2 * time.Minute})
		wantOutcome(t, res, OutcomeExited, 0)
		if !bytes.HasPrefix(res.Stdout, []byte("agree: 300 rounds")) {
			t.Errorf("stdout %q", res.Stdout)
		}
	})
}

// FuzzAccel calls the primitives on fuzzed memory and ranges: they never
// panic, refuse ranges outside the memory, and agree with the standard
// library on the ranges they accept.
func FuzzAccel(f *testing.F) {
	f.Add([]byte("some memory of the guest, long enough for a key and a nonce"), uint32(0), uint32(16), uint32(16), uint32(12), uint32(30), uint32(8))
	// matmul_f64 of a 3×2 (at 0) and a 2×4 matrix (at 100) into 200.
	f.Add([]byte("\x00\x00\x00\x00\x00\x00\xf0\x3f 200 bytes of matrices, read as float64 whatever they are: some are NaN, some tiny, some huge; the product's bits must equal the guest's loop's bits anyway, NaN or not, on every CPU......"), uint32(0), uint32(3), uint32(100), uint32(2), uint32(200), uint32(4))
	f.Fuzz(func(t *testing.T, mem []byte, keyPtr, keyLen, noncePtr, inLen, outPtr, adLen uint32) {
		mem = append(mem, make([]byte, 256)...)
		c := &accelCounter{}
		a := []uint64{uint64(keyPtr), uint64(inLen), uint64(outPtr)}
		if st := c.call("sha256", mem, a); st == AccelOK {
			want := sha256.Sum256(mem[keyPtr : keyPtr+inLen])
			if !bytes.Equal(mem[outPtr:outPtr+32], want[:]) && !overlaps(keyPtr, inLen, outPtr, 32) {
				t.Fatalf("sha256 differs")
			}
		}
		mem2 := append([]byte(nil), mem...)
		seal := []uint64{uint64(keyPtr), uint64(keyLen), uint64(noncePtr), uint64(keyPtr), uint64(inLen), uint64(noncePtr), uint64(adLen), uint64(outPtr)}
		if st := c.call("aes_gcm_seal", mem2, seal); st == AccelOK {
			key, nonce := mem[keyPtr:keyPtr+keyLen], mem[noncePtr:noncePtr+12]
			block, err := aes.NewCipher(key)
			if err != nil {
				t.Fatalf("sealed with a key the standard library refuses: %v", err)
			}
			g, _ := cipher.NewGCM(block)
			want := g.Seal(nil, nonce, mem[keyPtr:keyPtr+inLen], mem[noncePtr:noncePtr+adLen])
			if !bytes.Equal(mem2[outPtr:outPtr+inLen+16], want) {
				t.Fatalf("seal differs")
			}
		}
		// Streaming SHA-256 with its state at outPtr: the data (in two
		// pieces, split at adLen) gives the one-shot digest, unless the
		// ranges overlap the state (then only no panic is asked for).
		mem3 := append([]byte(nil), mem...)
		st := c.call("sha256_init", mem3, []uint64{uint64(outPtr)})
		split := min(adLen, inLen)
		st1 := c.call("sha256_update", mem3, []uint64{uint64(outPtr), uint64(keyPtr), uint64(split)})
		st2 := c.call("sha256_update", mem3, []uint64{uint64(outPtr), uint64(keyPtr) + uint64(split), uint64(inLen - split)})
		st3 := c.call("sha256_final", mem3, []uint64{uint64(outPtr), uint64(noncePtr)})
		stateIn := uint64(outPtr)+SHA256StateSize <= uint64(len(mem))
		dataIn := uint64(keyPtr)+uint64(inLen) <= uint64(len(mem))
		if (st == AccelOK) != stateIn || (st1 == AccelOK) != (stateIn && uint64(keyPtr)+uint64(split) <= uint64(len(mem))) {
			t.Fatalf("init %d, update %d with the state inside memory %v", st, st1, stateIn)
		}
		if st3 == AccelOK && dataIn && st2 == AccelOK && !overlaps(keyPtr, inLen, outPtr, SHA256StateSize) &&
			!overlaps(noncePtr, 32, outPtr, SHA256StateSize) && !overlaps(keyPtr, inLen, noncePtr, 32) {
			want := sha256.Sum256(mem[keyPtr : keyPtr+inLen])
			if !bytes.Equal(mem3[noncePtr:noncePtr+32], want[:]) {
				t.Fatalf("streaming sha256 differs")
			}
		}
		// A state the host did not write is refused.
		if stateIn {
			c.call("sha256_init", mem3, []uint64{uint64(outPtr)})
			mem3[outPtr] ^= 0x55
			if st := c.call("sha256_update", mem3, []uint64{uint64(outPtr), 0, 0}); st != AccelBadArg {
				t.Fatalf("a changed state header: status %d", st)
			}
		}
		// matmul_f64 with a at keyPtr, b at noncePtr, c at outPtr and
		// sizes of at most 7: the bits of the same loop run here, or a
		// refusal of exactly the ranges outside memory or overlapping c;
		// in a deterministic run a refusal naming that (status 3).
		m, k, n := uint64(keyLen%8), uint64(inLen%8), uint64(adLen%8)
		mm := []uint64{uint64(keyPtr), uint64(noncePtr), uint64(outPtr), m, k, n}
		mem4 := append([]byte(nil), mem...)
		st = c.call("matmul_f64", mem4, slices.Clone(mm))
		valid := uint64(keyPtr)+8*m*k <= uint64(len(mem)) && uint64(noncePtr)+8*k*n <= uint64(len(mem)) &&
			uint64(outPtr)+8*m*n <= uint64(len(mem)) && !rangesOverlap(uint64(outPtr), 8*m*n, uint64(keyPtr), 8*m*k) &&
			!rangesOverlap(uint64(outPtr), 8*m*n, uint64(noncePtr), 8*k*n)
		if (st == AccelOK) != valid || st != AccelOK && (st != AccelBadArg || !bytes.Equal(mem4, mem)) {
			t.Fatalf("matmul_f64 %d×%d·%d×%d: status %d, ranges valid %v", m, k, k, n, st, valid)
		}
		if valid {
			want := matMulF64(mem, mm)
			for i, w := range want {
				if got := binary.LittleEndian.Uint64(mem4[uint64(outPtr)+8*uint64(i):]); got != math.Float64bits(w) {
					t.Fatalf("matmul_f64 %d×%d·%d×%d: c[%d] = %x, want %x", m, k, k, n, i, got, math.Float64bits(w))
				}
			}
		}
		det := &accelCounter{deterministic: true}
		mem5 := append([]byte(nil), mem...)
		if st := det.call("matmul_f64", mem5, slices.Clone(mm)); st != map[bool]uint32{true: AccelNotDeterministic, false: AccelBadArg}[valid] || !bytes.Equal(mem5, mem) {
			t.Fatalf("matmul_f64 in a deterministic run: status %d, memory changed %v", st, !bytes.Equal(mem5, mem))
		}
		if want := 7 + 2*b2i(stateIn); c.calls.Load() != want {
			t.Fatalf("%d calls counted, want %d", c.calls.Load(), want)
		}
	})
}

// matMulF64 is matmul_f64 of the arguments a on mem, as a guest computes
// it (guest/hostmat's portable loop).
func matMulF64(mem []byte, a []uint64) []float64 {
	m, k, n := int(a[3]), int(a[4]), int(a[5])
	at := func(ptr uint64, i int) float64 {
		return math.Float64frombits(binary.LittleEndian.Uint64(mem[ptr+8*uint64(i):]))
	}
	c := make([]float64, m*n)
	for i := 0; i < m; i++ {
		for p := 0; p < k; p++ {
			aip := at(a[0], i*k+p)
			for j := 0; j < n; j++ {
				c[i*n+j] += float64(aip * at(a[1], p*n+j))
			}
		}
	}
	return c
}

// TestAccelMatMulLimits: matmul_f64 refuses a product beyond what the
// run's deadline allows before touching memory, and stops between blocks
// of rows once the run has ended.
func TestAccelMatMulLimits(t *testing.T) {
	const m, k, n = 256, 128, 256
	mem := make([]byte, 8*(m*k+k*n+m*n))
	args := func() []uint64 { return []uint64{0, 8 * m * k, 8 * (m*k + k*n), m, k, n} }
	near := &accelCounter{deadline: time.Now().Add(time.Microsecond)}
	if st := near.call("matmul_f64", mem, args()); st != AccelBeyondLimits {
		t.Errorf("a product beyond the deadline: status %d", st)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	ended := &accelCounter{ctx: ctx}
	for i := range mem[:8*m*k] {
		mem[i] = 0x3f
	}
	if st := ended.call("matmul_f64", mem, args()); st != AccelBeyondLimits {
		t.Errorf("a run that ended: status %d", st)
	}
	// Two blocks of matmulBlock multiply-adds (128 rows of 128·256):
	// the run that ended stopped after the first.
	if st := (&accelCounter{}).call("matmul_f64", mem, args()); st != AccelOK {
		t.Errorf("no limits: status %d", st)
	}
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

func overlaps(a, an, b, bn uint32) bool { return a < b+bn && b < a+an }

// ed25519Tampers are the changes FuzzAccelVerifySort makes to a valid
// signature (pub, msg, sig) before asking the host again; i picks the
// bit or point.
var ed25519Tampers = []struct {
	name   string
	change func(pub, msg, sig []byte, i int)
}{
	{"a bit of the signature flipped", func(_, _, sig []byte, i int) { sig[i%64] ^= 1 << (i % 8) }},
	{"a bit of the message flipped", func(_, msg, _ []byte, i int) {
		if len(msg) > 0 {
			msg[i%len(msg)] ^= 1 << (i % 8)
		}
	}},
	{"a bit of the key flipped", func(pub, _, _ []byte, i int) { pub[i%32] ^= 1 << (i % 8) }},
	// S + L encodes the same scalar; RFC 8032 and the standard library
	// refuse it.
	{"S made non-canonical", func(_, _, sig []byte, _ int) { addOrder(sig[32:]) }},
	{"a key of small order", func(pub, _, _ []byte, i int) { copy(pub, smallOrderPoint(i)) }},
	// With a key and R of small order and S = 0, cofactorless
	// verification accepts some messages ([k]A = -R) and not others.
	{"a key and R of small order, S zero", func(pub, _, sig []byte, i int) {
		copy(pub, smallOrderPoint(i))
		copy(sig, smallOrderPoint(i/8))
		clear(sig[32:])
	}},
}

// smallOrderPoint is the encoding of one of the eight points of order
// dividing 8 (and of two non-canonical encodings of them), picked by i.
func smallOrderPoint(i int) []byte {
	p := make([]byte, 32)
	switch i % 10 {
	case 0: // the identity, y = 1
		p[0] = 1
	case 1: // order 2, y = -1
		copy(p, bytes.Repeat([]byte{0xff}, 32))
		p[0], p[31] = 0xec, 0x7f
	case 2, 3: // order 4, y = 0, either sign of x
		p[31] = byte(i%10-2) << 7
	case 4, 5, 6, 7: // order 8
		b, _ := hex.DecodeString([]string{
			"26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
			"c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
		}[i%2])
		copy(p, b)
		p[31] |= byte(i%10/6) << 7
	case 8: // y = p + 1, a non-canonical identity
		copy(p, bytes.Repeat([]byte{0xff}, 32))
		p[0], p[31] = 0xee, 0x7f
	case 9: // y = p - 1 with the sign bit of x = 0 set: -1 signed
		copy(p, bytes.Repeat([]byte{0xff}, 32))
		p[0] = 0xec
	}
	return p
}

// addOrder adds the group order L = 2^252 + 27742317777372353535851937790883648493
// to the little-endian 32-byte scalar s (mod 2^256).
func addOrder(s []byte) {
	l, _ := hex.DecodeString("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010")
	carry := 0
	for i := range 32 {
		v := int(s[i]) + int(l[i]) + carry
		s[i], carry = byte(v), v>>8
	}
}

// FuzzAccelVerifySort drives ed25519_verify and the sorts with fuzzed
// memory and ranges: they never panic, refuse ranges outside the memory,
// and agree with the standard library on the ranges they accept — a
// signature made over the fuzzed message verifies; tampered with (a bit
// of the message, signature or key flipped, S made non-canonical, a key
// or R of small order), the host judges it exactly as ed25519.Verify
// does; a sorted range is the standard library's sort of it.
func FuzzAccelVerifySort(f *testing.F) {
	for tamper := range uint8(len(ed25519Tampers)) {
		f.Add([]byte("memory of the guest"), uint32(0), uint32(19), uint32(3), uint32(5), true, tamper)
	}
	f.Add([]byte("memory of the guest"), uint32(0), uint32(0), uint32(3), uint32(5), false, uint8(1))
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	f.Fuzz(func(t *testing.T, mem []byte, msgPtr, msgLen, sortPtr, sortN uint32, signed bool, tamper uint8) {
		c := &accelCounter{}
		// The key and a signature of the message (if it is in memory)
		// at the end of memory.
		n := uint32(len(mem))
		mem = append(mem, make([]byte, 96)...)
		copy(mem[n:], priv.Public().(ed25519.PublicKey))
		verify := func(pubPtr, sigPtr uint32) uint32 {
			return c.call("ed25519_verify", mem, []uint64{uint64(pubPtr), uint64(msgPtr), uint64(msgLen), uint64(sigPtr)})
		}
		st := verify(n, n+32)
		inside := uint64(msgPtr)+uint64(msgLen) <= uint64(len(mem))
		if !inside {
			if st != AccelBadArg {
				t.Fatalf("a message outside memory: status %d", st)
			}
		} else if st != AccelAuthFailed && !ed25519.Verify(priv.Public().(ed25519.PublicKey), mem[msgPtr:msgPtr+msgLen], mem[n+32:]) {
			t.Fatalf("a zero signature verified: status %d", st)
		}
		// A key or signature running past the end of memory, by one byte.
		if st := verify(n+65, n+32); st != AccelBadArg {
			t.Fatalf("a key past the end of memory: status %d", st)
		}
		if st := verify(n, n+33); st != AccelBadArg {
			t.Fatalf("a signature past the end of memory: status %d", st)
		}
		calls := int64(3)
		if inside && !overlaps(msgPtr, msgLen, n, 96) {
			copy(mem[n+32:], ed25519.Sign(priv, mem[msgPtr:msgPtr+msgLen]))
			if st := verify(n, n+32); st != AccelOK {
				t.Fatalf("a valid signature: status %d", st)
			}
			kind := ed25519Tampers[int(tamper)%len(ed25519Tampers)]
			pub, msg, sig := mem[n:n+32], mem[msgPtr:msgPtr+msgLen], mem[n+32:n+96]
			kind.change(pub, msg, sig, int(tamper))
			want := map[bool]uint32{true: AccelOK, false: AccelAuthFailed}[ed25519.Verify(ed25519.PublicKey(pub), msg, sig)]
			if st := verify(n, n+32); st != want {
				t.Fatalf("%s: status %d, want %d (ed25519.Verify's judgement)", kind.name, st, want)
			}
			calls += 2
		}
		if c.calls.Load() != calls {
			t.Fatalf("%d calls counted, want %d", c.calls.Load(), calls)
		}
		name := "sort_u64"
		if signed {
			name = "sort_i64"
		}
		before := bytes.Clone(mem)
		st = c.call(name, mem, []uint64{uint64(sortPtr), uint64(sortN)})
		if uint64(sortPtr)+8*uint64(sortN) > uint64(len(mem)) {
			if st != AccelBadArg || !bytes.Equal(mem, before) {
				t.Fatalf("a range outside memory: status %d, memory changed %v", st, !bytes.Equal(mem, before))
			}
			return
		}
		want := make([]int64, sortN)
		for i := range want {
			want[i] = int64(binary.LittleEndian.Uint64(before[int(sortPtr)+8*i:]))
		}
		if signed {
			slices.Sort(want)
		} else {
			slices.SortFunc(want, func(x, y int64) int { return cmp.Compare(uint64(x), uint64(y)) })
		}
		for i, w := range want {
			if got := int64(binary.LittleEndian.Uint64(mem[int(sortPtr)+8*i:])); st != AccelOK || got != w {
				t.Fatalf("%s of %d: status %d, [%d] = %d, want %d", name, sortN, st, i, got, w)
			}
		}
	})
}

// TestConfigEngine: a run naming another engine than its runtime's
// (a policy's "engine") runs under that engine, through a runtime of it
// made on first use with the same options; naming one that cannot run
// here (no worker binary for it) is an error wrapping
// ErrEngineUnavailable that names what is missing, every time.
func TestConfigEngine(t *testing.T) {
	r := newRuntime(t, Options{Engine: EngineWazero, DataDir: t.TempDir()})
	for i := 0; i < 2; i++ {
		_, err := r.Run(t.Context(), &Config{Module: wasmExit(3), Engine: EngineWasmtime})
		if !errors.Is(err, ErrEngineUnavailable) || !strings.Contains(err.Error(), "cloister-isolate-wasmtime") {
			t.Fatalf("run %d naming an engine without its worker: %v", i, err)
		}
	}
	r = newRuntime(t, Options{Engine: EngineWazero, DataDir: t.TempDir(),
		EngineWorkerBinaries: map[string]string{EngineWasmtime: wasmtimeWorker(t)}})
	for _, engine := range []string{"", EngineWazero, EngineWasmtime} {
		res := mustRun(t, r, &Config{Module: wasmExit(3), Engine: engine})
		wantOutcome(t, res, OutcomeExited, 3)
		want := cmp.Or(engine, EngineWazero)
		if !strings.HasPrefix(res.Report.Engine, want+" ") {
			t.Errorf("a run asking for %q ran under %q", engine, res.Report.Engine)
		}
	}
	if _, err := r.Run(t.Context(), &Config{Module: wasmExit(3), Engine: "v8"}); !errors.Is(err, ErrEngineUnavailable) {
		t.Errorf("an unknown engine: %v", err)
	}
}
