package isolate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"golang.org/x/time/rate"

	"github.com/cloisterhq/cloister/internal/callname"
)

// Host calls: while it runs, a guest may ask its host for something by
// name — a host-accelerated primitive, a sub-model of a federated
// computation — and wait for the answer. The guest imports them from the
// WebAssembly module HostModule (the ABI: docs/isolate.md, "Host calls";
// Go programs use guest.HostCall, C and Rust the header in guest/c). In a
// jailed worker a call travels as a frame to the parent, which answers it
// with the job's handler and sends the response back: a bounded, versioned
// channel beside the job's own frames (decision 0071).
//
// Who may call what is the caller of Run's decision: Config.HostCalls
// holds exactly the calls this job may make (a node takes them from the
// policy). Every request and response is bounded, checked before anything
// is allocated on either side; calls are answered one at a time per run,
// at most CallRate a second (a guest calling faster waits), with at most
// Options.MaxConcurrentCalls handlers running in a Runtime at once; a
// handler's context ends with the run's deadline.

// HostModule is the import module of the host-call ABI, versioned in its
// name: a change to the ABI is a new module, and a guest importing one the
// runtime does not offer is refused before it runs.
const HostModule = "cloister_host_v1"

// HostCall is one call a job may make.
type HostCall struct {
	// Handle answers one request. ctx ends at the run's deadline (or when
	// Run's context ends). An error reaches the guest as
	// HostCallFailed with the error's text as the response.
	Handle func(ctx context.Context, req []byte) ([]byte, error)
	// MaxRequest and MaxResponse bound the bytes each way (0: the
	// defaults). A longer request is refused in the guest's worker
	// (HostCallTooLarge); a longer response fails the call.
	MaxRequest, MaxResponse int
	// Deterministic says the answer depends on the request alone: only
	// such calls may be made by a deterministic run.
	Deterministic bool
}

// Limits of host calls.
const (
	DefaultMaxCallRequest  = 1 << 20
	DefaultMaxCallResponse = 1 << 20
	MaxCallBytes           = 64 << 20 // largest MaxRequest or MaxResponse allowed
	DefaultCallRate        = 20000    // calls a second per run
	callBurst              = 100
	MaxCallNameLen         = callname.MaxLen
	// DefaultMaxConcurrentCalls bounds the handlers running at once in a
	// Runtime (Options.MaxConcurrentCalls).
	DefaultMaxConcurrentCalls = 64
)

// Status codes the guest's call returns (the ABI).
const (
	HostCallOK          = 0 // the response is in the buffer, its length at resp_len
	HostCallShortBuffer = 1 // the response is longer than the buffer: its length at resp_len; fetch it with response
	HostCallNotAllowed  = 2 // the job may not make this call (or no such call)
	HostCallTooLarge    = 3 // the request exceeds the call's limit
	HostCallFailed      = 4 // the host could not answer: the response is its message
	HostCallBadArgument = 5 // a pointer or length outside the guest's memory, or a bad name
	HostCallNoResponse  = 6 // response without a response kept from the last call
)

// ValidateHostCallName checks that name can name a host call: a dotted
// lower-case name and a version, "cloister.sha256/v1".
func ValidateHostCallName(name string) error { return callname.Validate(name) }

// jobCall is what the worker knows of one call: its name and bounds.
type jobCall struct {
	Name        string
	MaxRequest  int64
	MaxResponse int64
}

// resolveCalls checks the calls of cfg and returns them sorted by name,
// with their limits.
func resolveCalls(cfg *Config) ([]jobCall, error) {
	names := make([]string, 0, len(cfg.HostCalls))
	for name, c := range cfg.HostCalls {
		if err := ValidateHostCallName(name); err != nil {
			return nil, fmt.Errorf("isolate: %w", err)
		}
		if c.Handle == nil {
			return nil, fmt.Errorf("isolate: host call %q has no handler", name)
		}
		if c.MaxRequest < 0 || c.MaxRequest > MaxCallBytes || c.MaxResponse < 0 || c.MaxResponse > MaxCallBytes {
			return nil, fmt.Errorf("isolate: host call %q: limits beyond %d bytes", name, MaxCallBytes)
		}
		if cfg.Deterministic && !c.Deterministic {
			return nil, fmt.Errorf("isolate: host call %q is not deterministic, and the run is", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	calls := make([]jobCall, len(names))
	for i, name := range names {
		c := cfg.HostCalls[name]
		calls[i] = jobCall{Name: name, MaxRequest: int64(orDefault(c.MaxRequest, DefaultMaxCallRequest)), MaxResponse: int64(orDefault(c.MaxResponse, DefaultMaxCallResponse))}
	}
	return calls, nil
}

func orDefault(v, d int) int {
	if v <= 0 {
		return d
	}
	return v
}

func findCall(calls []jobCall, name string) (jobCall, bool) {
	i := sort.Search(len(calls), func(i int) bool { return calls[i].Name >= name })
	if i < len(calls) && calls[i].Name == name {
		return calls[i], true
	}
	return jobCall{}, false
}

// maxCallMessage bounds the text of a failed call.
const maxCallMessage = 4096

// callDispatcher answers a run's calls in the parent (or in process): it
// checks each against the job's calls, waits for the run's rate limit and
// a Runtime-wide handler slot, and runs the handler under the run's
// deadline.
type callDispatcher struct {
	handlers map[string]HostCall
	calls    []jobCall
	limiter  *rate.Limiter
	slots    chan struct{}
	// ctx is the run's: Run's context until the guest starts, then with
	// the run's deadline (start); stop ends it.
	ctx      context.Context
	cancel   context.CancelFunc
	answered atomic.Int64
}

func newCallDispatcher(ctx context.Context, cfg *Config, calls []jobCall, slots chan struct{}) *callDispatcher {
	r := cfg.CallRate
	if r <= 0 {
		r = DefaultCallRate
	}
	return &callDispatcher{handlers: cfg.HostCalls, calls: calls, limiter: rate.NewLimiter(rate.Limit(r), callBurst), slots: slots, ctx: ctx, cancel: func() {}}
}

// start gives the handlers the run's deadline, timeout from now (when the
// guest starts); stop ends their context when the run is over.
func (d *callDispatcher) start(timeout time.Duration) {
	d.ctx, d.cancel = context.WithTimeout(d.ctx, timeout)
}

func (d *callDispatcher) stop() { d.cancel() }

// errRunEnded: the run's deadline passed (or Run's context ended) while a
// call waited.
var errRunEnded = errors.New("the run ended")

// dispatch answers one call: a status and the response (or the message
// of a failure). ended says the run's deadline passed (or Run's context
// ended) while the call waited or ran: the guest must get no answer then,
// for an answer would let it go on (and perhaps exit cleanly) in the
// moment before it is stopped; the run ends as a timeout instead.
func (d *callDispatcher) dispatch(name string, req []byte) (status uint32, resp []byte, ended bool) {
	c, ok := findCall(d.calls, name)
	if !ok {
		return HostCallNotAllowed, nil, false
	}
	if int64(len(req)) > c.MaxRequest {
		return HostCallTooLarge, nil, false
	}
	if err := d.limiter.Wait(d.ctx); err != nil {
		return HostCallFailed, []byte(errRunEnded.Error()), d.ctx.Err() != nil
	}
	select {
	case d.slots <- struct{}{}:
		defer func() { <-d.slots }()
	case <-d.ctx.Done():
		return HostCallFailed, []byte(errRunEnded.Error()), true
	}
	d.answered.Add(1)
	resp, err := d.handlers[name].Handle(d.ctx, req)
	if d.ctx.Err() != nil {
		return HostCallFailed, []byte(errRunEnded.Error()), true
	}
	switch {
	case err != nil:
		msg := err.Error()
		if len(msg) > maxCallMessage {
			msg = msg[:maxCallMessage]
		}
		return HostCallFailed, []byte(msg), false
	case int64(len(resp)) > c.MaxResponse:
		return HostCallFailed, fmt.Appendf(nil, "the response of %d bytes exceeds the %d bytes %s may return", len(resp), c.MaxResponse, name), false
	}
	return HostCallOK, resp, false
}

// callTransport carries a guest's call to whoever answers it: the parent,
// over frames, for a worker; the dispatcher itself in process.
type callTransport interface {
	roundTrip(name string, req []byte) (status uint32, resp []byte)
}

// directCalls answers an in-process guest's calls with the dispatcher.
// The request is copied: it is a view of the guest's memory, which a
// handler must not keep.
type directCalls struct{ d *callDispatcher }

func (c directCalls) roundTrip(name string, req []byte) (uint32, []byte) {
	status, resp, ended := c.d.dispatch(name, bytes.Clone(req))
	if ended {
		// The guest stops in the call, never with an answer; classify
		// makes the run a timeout.
		panic(errRunEnded)
	}
	return status, resp
}

// hostFunctions are the functions of HostModule and their signatures
// (every parameter and result an i32).
var hostFunctions = map[string]int{
	// call(name_ptr, name_len, req_ptr, req_len, resp_ptr, resp_cap, resp_len_ptr) -> status
	"call": 7,
	// response(resp_ptr, resp_cap, resp_len_ptr) -> status
	"response": 3,
}

// memoryView is the whole of a wazero module's memory as a byte slice (nil
// without one).
func memoryView(mod api.Module) []byte {
	mem := mod.Memory()
	if mem == nil {
		return nil
	}
	b, _ := mem.Read(0, mem.Size())
	return b
}

// instantiateAccel instantiates AccelModule in rt with the primitives in
// names, counted by c.
func instantiateAccel(ctx context.Context, rt wazero.Runtime, names []string, c *accelCounter) error {
	b := rt.NewHostModuleBuilder(AccelModule)
	seen := map[string]bool{}
	for _, name := range names {
		f, ok := accelFunctions[name]
		if !ok || seen[name] {
			continue
		}
		seen[name] = true
		params := make([]api.ValueType, f.params)
		for i := range params {
			params[i] = api.ValueTypeI32
		}
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(_ context.Context, mod api.Module, stack []uint64) {
			stack[0] = uint64(c.call(name, memoryView(mod), stack[:f.params]))
		}), params, []api.ValueType{api.ValueTypeI32}).Export(name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// hostCalls answers one run's calls to HostModule on a view of the guest's
// memory, for every engine.
type hostCalls struct {
	calls   []jobCall
	t       callTransport
	pending []byte // a response longer than the guest's buffer, kept for response
}

// answer writes resp to the guest's buffer if it fits, and its length.
func (h *hostCalls) answer(mem []byte, resp []byte, respPtr, respCap, respLenPtr uint64, status uint32) uint32 {
	if !putU32(mem, respLenPtr, uint32(len(resp))) {
		return HostCallBadArgument
	}
	if uint64(len(resp)) > respCap {
		if status == HostCallOK {
			h.pending = resp
			return HostCallShortBuffer
		}
		resp = resp[:respCap] // a failure's message, cut
	}
	b, ok := memRange(mem, respPtr, uint64(len(resp)))
	if !ok {
		return HostCallBadArgument
	}
	copy(b, resp)
	return status
}

// call is call(name_ptr, name_len, req_ptr, req_len, resp_ptr, resp_cap, resp_len_ptr).
func (h *hostCalls) call(mem []byte, a []uint64) uint32 {
	namePtr, nameLen, reqPtr, reqLen := uint64(uint32(a[0])), uint64(uint32(a[1])), uint64(uint32(a[2])), uint64(uint32(a[3]))
	respPtr, respCap, respLenPtr := uint64(uint32(a[4])), uint64(uint32(a[5])), uint64(uint32(a[6]))
	h.pending = nil
	if mem == nil || nameLen > MaxCallNameLen {
		return HostCallBadArgument
	}
	if _, ok := memRange(mem, respPtr, respCap); !ok {
		return HostCallBadArgument
	}
	name, ok := memRange(mem, namePtr, nameLen)
	if !ok {
		return HostCallBadArgument
	}
	c, ok := findCall(h.calls, string(name))
	if !ok {
		return HostCallNotAllowed
	}
	if int64(reqLen) > c.MaxRequest {
		return HostCallTooLarge
	}
	req, ok := memRange(mem, reqPtr, reqLen)
	if !ok {
		return HostCallBadArgument
	}
	status, resp := h.t.roundTrip(c.Name, req)
	return h.answer(mem, resp, respPtr, respCap, respLenPtr, status)
}

// response is response(resp_ptr, resp_cap, resp_len_ptr).
func (h *hostCalls) response(mem []byte, a []uint64) uint32 {
	if mem == nil {
		return HostCallBadArgument
	}
	if h.pending == nil {
		return HostCallNoResponse
	}
	resp := h.pending
	h.pending = nil
	return h.answer(mem, resp, uint64(uint32(a[0])), uint64(uint32(a[1])), uint64(uint32(a[2])), HostCallOK)
}

// instantiateHostCalls instantiates HostModule in rt for a job whose calls
// are calls, answered through t. The guest's memory is read and written
// only within its bounds (a pointer outside is HostCallBadArgument, never
// a trap of the host).
func instantiateHostCalls(ctx context.Context, rt wazero.Runtime, calls []jobCall, t callTransport) error {
	h := &hostCalls{calls: calls, t: t}
	call := func(_ context.Context, mod api.Module, stack []uint64) {
		stack[0] = uint64(h.call(memoryView(mod), stack))
	}
	response := func(_ context.Context, mod api.Module, stack []uint64) {
		stack[0] = uint64(h.response(memoryView(mod), stack))
	}
	i32 := api.ValueTypeI32
	b := rt.NewHostModuleBuilder(HostModule)
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(call), []api.ValueType{i32, i32, i32, i32, i32, i32, i32}, []api.ValueType{i32}).
		WithParameterNames("name_ptr", "name_len", "req_ptr", "req_len", "resp_ptr", "resp_cap", "resp_len_ptr").Export("call")
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(response), []api.ValueType{i32, i32, i32}, []api.ValueType{i32}).
		WithParameterNames("resp_ptr", "resp_cap", "resp_len_ptr").Export("response")
	_, err := b.Instantiate(ctx)
	return err
}
