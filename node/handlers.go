package node

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/cloister/v1/cloisterv1connect"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/isolate"
)

// Version is reported by GetNodeInfo.
const Version = "cloister/v1"

type sniKey struct{}

// Handler returns the HTTP handler for both services. It expects requests
// that arrived over TLS (the session rules depend on the SNI); serve it
// with Serve, or with an http.Server using TLSConfig. Each RPC is bounded
// by its own limits before its message is decoded (limits.go); Serve adds
// the listener's (connections, timeouts, body pace).
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	// Almost everything a session returns is ciphertext, which does not
	// compress: compressing responses only costs CPU.
	base := []connect.HandlerOption{connect.WithCompressMinBytes(1 << 30),
		connect.WithInterceptors(connect.UnaryInterceptorFunc(n.countCalls))}
	lims := rpcLimits(n.limits)
	na, sa := nodeAPI{n}, sessionAPI{n}
	for _, rt := range []rpcRoute{
		route(cloisterv1connect.NodeServiceCreateSessionProcedure, na.CreateSession),
		route(cloisterv1connect.NodeServiceGetStatusProcedure, na.GetStatus),
		route(cloisterv1connect.NodeServiceGetNodeInfoProcedure, na.GetNodeInfo),
		route(cloisterv1connect.SessionServiceAttestProcedure, sa.Attest),
		route(cloisterv1connect.SessionServiceUploadProgramProcedure, sa.UploadProgram),
		route(cloisterv1connect.SessionServiceUploadInputProcedure, sa.UploadInput),
		route(cloisterv1connect.SessionServiceBeginUploadProcedure, sa.BeginUpload),
		route(cloisterv1connect.SessionServicePutChunkProcedure, sa.PutChunk),
		route(cloisterv1connect.SessionServiceCommitUploadProcedure, sa.CommitUpload),
		route(cloisterv1connect.SessionServiceGetResultProcedure, sa.GetResult),
		route(cloisterv1connect.SessionServiceReadResultProcedure, sa.ReadResult),
		route(cloisterv1connect.SessionServiceCloseSessionProcedure, sa.CloseSession),
	} {
		// "/cloister.v1.NodeService/CreateSession"
		full := strings.ReplaceAll(strings.TrimPrefix(rt.proc, "/"), "/", ".")
		desc, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(full))
		if err != nil {
			panic("node: " + rt.proc + ": " + err.Error())
		}
		name := rt.proc[strings.LastIndexByte(rt.proc, '/')+1:]
		lim, ok := lims[name]
		if !ok {
			panic("node: no request limit for " + rt.proc)
		}
		opts := append([]connect.HandlerOption{connect.WithSchema(desc)}, base...)
		mux.Handle(rt.proc, n.bounded(name, lim, rt.handler(append(opts, rpcOptions(lim)...)...)))
	}
	mux.Handle("GET /metrics", n.metricsHandler())
	for _, m := range n.mounted {
		mux.Handle(m.pattern, m.h)
	}
	n.opsHandlers(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni := ""
		if r.TLS != nil {
			sni = r.TLS.ServerName
		}
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), sniKey{}, sni)))
	})
}

// rpcRoute is one unary RPC: its procedure and how to make its handler.
type rpcRoute struct {
	proc    string
	handler func(...connect.HandlerOption) http.Handler
}

func route[Req, Res any](proc string, fn func(context.Context, *connect.Request[Req]) (*connect.Response[Res], error)) rpcRoute {
	return rpcRoute{proc, func(o ...connect.HandlerOption) http.Handler { return connect.NewUnaryHandler(proc, fn, o...) }}
}

// countCalls feeds every call's outcome to the metrics.
func (n *Node) countCalls(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		resp, err := next(ctx, req)
		proc := req.Spec().Procedure
		if i := strings.LastIndexByte(proc, '/'); i >= 0 {
			proc = proc[i+1:]
		}
		n.metrics.observe(proc, err)
		return resp, err
	}
}

type nodeAPI struct{ n *Node }

func (a nodeAPI) CreateSession(ctx context.Context, req *connect.Request[cloisterv1.CreateSessionRequest]) (*connect.Response[cloisterv1.CreateSessionResponse], error) {
	s, err := a.n.createSession(ctx, req.Msg, req.Peer().Addr)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&cloisterv1.CreateSessionResponse{SessionId: s.id, PolicyHash: s.hash[:], ServerName: protocol.ServerName(s.id)}), nil
}

func (a nodeAPI) GetNodeInfo(ctx context.Context, req *connect.Request[cloisterv1.GetNodeInfoRequest]) (*connect.Response[cloisterv1.GetNodeInfoResponse], error) {
	return connect.NewResponse(&cloisterv1.GetNodeInfoResponse{
		IsolateClass: string(a.n.class), PlatformKey: a.n.platform.Public().SigningString(), Version: Version,
		LedgerUrl: a.n.opts.LedgerURL,
	}), nil
}

func (a nodeAPI) GetStatus(ctx context.Context, req *connect.Request[cloisterv1.GetStatusRequest]) (*connect.Response[cloisterv1.GetStatusResponse], error) {
	id := req.Msg.SessionId
	if err := protocol.ValidSessionID(id); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	s := a.n.session(id)
	if s == nil {
		return a.closedStatus(id)
	}
	if req.Msg.WaitMs > 0 {
		t := time.NewTimer(min(time.Duration(req.Msg.WaitMs)*time.Millisecond, maxLongPoll))
		select {
		case <-s.done:
		case <-t.C:
		case <-ctx.Done():
		case <-a.n.baseCtx.Done():
		}
		t.Stop()
	}
	// Every committed step's ledger index, including steps whose entries
	// are still being appended.
	s.awaitRecords(ctx)
	return connect.NewResponse(s.status()), nil
}

func (a nodeAPI) closedStatus(id string) (*connect.Response[cloisterv1.GetStatusResponse], error) {
	a.n.mu.RLock()
	ts, ok := a.n.closed.get(id)
	a.n.mu.RUnlock()
	if !ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no session %s on this node", id))
	}
	return connect.NewResponse(&cloisterv1.GetStatusResponse{
		SessionId: id, State: cloisterv1.SessionState_SESSION_STATE_CLOSED,
		Reason: fmt.Sprintf("closed by %q at %s; its data is erased", ts.By, ts.Closed.UTC().Format(time.RFC3339)),
	}), nil
}

func (s *session) status() *cloisterv1.GetStatusResponse {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rec
	st := &cloisterv1.GetStatusResponse{
		SessionId: s.id, PolicyHash: s.hash[:], PolicyName: s.pol.Name, State: apiState(r.State), Reason: r.Reason,
		Report: apiReport(r.Report), IsolateClass: string(s.n.class), CreatedUnixMs: r.Created.UnixMilli(),
		ServerName: protocol.ServerName(s.id),
	}
	if r.Replica != nil {
		st.ReplicaSet = r.Replica.Set
	}
	for _, p := range s.pol.Programs {
		st.Programs = append(st.Programs, apiSlot(p.Name, p.Provider, r.Programs[p.Name], r.Events, EventProgramUploaded))
	}
	for _, in := range s.pol.Inputs {
		st.Inputs = append(st.Inputs, apiSlot(in.Name, in.Provider, r.Inputs[in.Name], r.Events, EventInputUploaded))
	}
	for _, o := range s.pol.Outputs {
		oi := &cloisterv1.OutputInfo{Name: o.Name, Readers: append([]string(nil), o.Readers...)}
		if or := r.Outputs[o.Name]; or != nil {
			oi.Available = len(or.Envelopes) > 0
			oi.FetchedBy = append([]string(nil), or.Fetched...)
		}
		st.Outputs = append(st.Outputs, oi)
	}
	for _, e := range r.Events {
		st.Events = append(st.Events, &cloisterv1.Event{Kind: e.Kind, Principal: e.Principal, Name: e.Name, UnixMs: e.Time.UnixMilli(), LedgerIndex: e.LedgerIndex})
	}
	return st
}

func apiSlot(name, provider string, sr *slotRecord, events []eventRecord, kind string) *cloisterv1.Slot {
	sl := &cloisterv1.Slot{Name: name, Provider: provider}
	if sr != nil {
		sl.Present, sl.EnvelopeSha256, sl.UploadedUnixMs = true, sr.EnvelopeSHA256, sr.Uploaded.UnixMilli()
		for _, e := range events {
			if e.Kind == kind && e.Name == name {
				sl.EventIndex = e.LedgerIndex
			}
		}
	}
	return sl
}

func apiState(s string) cloisterv1.SessionState {
	switch s {
	case stateProvisioning:
		return cloisterv1.SessionState_SESSION_STATE_PROVISIONING
	case stateRunning:
		return cloisterv1.SessionState_SESSION_STATE_RUNNING
	case stateFinished:
		return cloisterv1.SessionState_SESSION_STATE_FINISHED
	case stateFailed:
		return cloisterv1.SessionState_SESSION_STATE_FAILED
	case stateClosed:
		return cloisterv1.SessionState_SESSION_STATE_CLOSED
	}
	return cloisterv1.SessionState_SESSION_STATE_UNSPECIFIED
}

func apiReport(r *isolate.Report) *cloisterv1.RunReport {
	if r == nil {
		return nil
	}
	return &cloisterv1.RunReport{
		Outcome: string(r.Outcome), ExitCode: int32(r.ExitCode), WallMs: r.WallMS, ProgramSha256: r.ProgramSHA256,
		Protections: r.Protections, MissingProtections: r.Missing, Error: r.Error, Deterministic: r.Deterministic, CpuMs: r.CPUMS,
	}
}

type sessionAPI struct{ n *Node }

// onSessionConn finds the session a request names and checks that it came
// over a TLS connection to that session's own certificate: a client that
// attested pinned that certificate's key, and nothing may reach a session
// by a path the attestation did not cover.
func (a sessionAPI) onSessionConn(ctx context.Context, id string) (*session, error) {
	if err := protocol.ValidSessionID(id); err != nil {
		return nil, connect.NewError(connect.CodeInvalidArgument, err)
	}
	sni, _ := ctx.Value(sniKey{}).(string)
	if protocol.SessionFromServerName(sni) != id {
		return nil, refused(connect.CodePermissionDenied, ruleSessionConn, "session %s is reached only over TLS with server name %s (this connection asked for %q)", id, protocol.ServerName(id), sni)
	}
	if s := a.n.session(id); s != nil {
		return s, nil
	}
	a.n.mu.RLock()
	ts, ok := a.n.closed.get(id)
	a.n.mu.RUnlock()
	if ok {
		return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("session %s was closed by %q; its data is erased", id, ts.By))
	}
	return nil, connect.NewError(connect.CodeNotFound, fmt.Errorf("no session %s on this node", id))
}

func (a sessionAPI) Attest(ctx context.Context, req *connect.Request[cloisterv1.AttestRequest]) (*connect.Response[cloisterv1.AttestResponse], error) {
	s, err := a.onSessionConn(ctx, req.Msg.SessionId)
	if err != nil {
		return nil, err
	}
	if len(req.Msg.Nonce) != protocol.NonceSize {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("nonce is %d bytes, want %d", len(req.Msg.Nonce), protocol.NonceSize))
	}
	ev, err := s.core.attest(ctx, req.Msg.Nonce)
	if err != nil {
		return nil, connect.NewError(connect.CodeInternal, fmt.Errorf("producing evidence: %w", err))
	}
	return connect.NewResponse(&cloisterv1.AttestResponse{
		SessionId: s.id, PolicyHash: s.hash[:], HpkePublicKey: s.core.hpkePub,
		Evidence: &cloisterv1.Evidence{Class: string(ev.Class), Data: ev.Data, Collateral: ev.Collateral},
	}), nil
}

func (a sessionAPI) UploadProgram(ctx context.Context, req *connect.Request[cloisterv1.UploadRequest]) (*connect.Response[cloisterv1.UploadResponse], error) {
	return a.upload(ctx, true, req.Msg)
}

func (a sessionAPI) UploadInput(ctx context.Context, req *connect.Request[cloisterv1.UploadRequest]) (*connect.Response[cloisterv1.UploadResponse], error) {
	return a.upload(ctx, false, req.Msg)
}

func (a sessionAPI) upload(ctx context.Context, program bool, m *cloisterv1.UploadRequest) (*connect.Response[cloisterv1.UploadResponse], error) {
	s, err := a.onSessionConn(ctx, m.SessionId)
	if err != nil {
		return nil, err
	}
	resp, err := s.upload(ctx, program, m)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (a sessionAPI) GetResult(ctx context.Context, req *connect.Request[cloisterv1.GetResultRequest]) (*connect.Response[cloisterv1.GetResultResponse], error) {
	s, err := a.onSessionConn(ctx, req.Msg.SessionId)
	if err != nil {
		return nil, err
	}
	resp, err := s.result(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}

func (a sessionAPI) CloseSession(ctx context.Context, req *connect.Request[cloisterv1.CloseSessionRequest]) (*connect.Response[cloisterv1.CloseSessionResponse], error) {
	s, err := a.onSessionConn(ctx, req.Msg.SessionId)
	if err != nil {
		return nil, err
	}
	resp, err := s.close(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(resp), nil
}
