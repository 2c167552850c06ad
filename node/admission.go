package node

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"connectrpc.com/connect"

	cloisterv1 "github.com/cloisterhq/cloister/api/cloister/v1"
	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/keys"
)

// AdmissionMode says who may create sessions on a node
// (docs/decisions/0061-admission.md). Whatever the mode, the caps of
// Quotas apply to every creator and in total.
type AdmissionMode string

const (
	// AdmitOpen admits anyone; a signed request is counted against its
	// key's quotas, an unsigned one against its IP address's. A node in
	// open mode serves only on loopback unless Admission.AllowOpen.
	AdmitOpen AdmissionMode = "open"
	// AdmitAllowList admits the keys of Admission.AllowKeys.
	AdmitAllowList AdmissionMode = "allow-list"
	// AdmitToken admits a key that presents an admission token signed by
	// one of Admission.TokenIssuers (IssueAdmissionToken).
	AdmitToken AdmissionMode = "token"
	// AdmitConsortium admits the keys the ledger records as consortium
	// members (member.admitted, not removed since): Admission.Members.
	AdmitConsortium AdmissionMode = "consortium"
)

// Modes lists the admission modes.
var Modes = []AdmissionMode{AdmitOpen, AdmitAllowList, AdmitToken, AdmitConsortium}

// Members says whether a key is a consortium member now: the ledger, in
// process (*ledger.Embedded) or over its API (*ledger/client.Client).
type Members interface {
	IsMember(ctx context.Context, key ed25519.PublicKey) (bool, error)
}

// Admission is the node's admission configuration.
type Admission struct {
	// Mode is who may create sessions; "" means AdmitOpen.
	Mode AdmissionMode
	// AllowOpen lets a node in open mode serve on an address beyond
	// loopback: anyone who reaches it may then create sessions, within
	// the quotas.
	AllowOpen bool
	// AllowKeys are the creators an allow-list node admits.
	AllowKeys []ed25519.PublicKey
	// TokenIssuers are the operator keys whose admission tokens a token
	// node accepts.
	TokenIssuers []ed25519.PublicKey
	// Members answers for a consortium node (required in that mode).
	Members Members
	// Quotas bound what creators may hold, in every mode.
	Quotas Quotas
}

// Rules of admission and quotas, as refusals and metrics name them.
const (
	ruleAdmission      = "admission"
	ruleMaxSessions    = "max-sessions"
	ruleCreatorSess    = "max-sessions-per-creator"
	ruleMaxStored      = "max-stored"
	ruleCreatorStored  = "max-stored-per-creator"
	ruleCreateRate     = "create-rate"
	ruleCreatorRate    = "create-rate-per-creator"
	ruleDiskReserve    = "disk-reserve"
	ruleCreatorsMemory = "max-creators"
)

// memberCacheTTL is how long a consortium node trusts its last answer
// about a key, so that creating a session is not a ledger round trip.
const memberCacheTTL = 30 * time.Second

// maxCreateNonces bounds the create-request nonces remembered against
// replay (each is kept for protocol.ReplayMemory). Only requests within
// the create rates are remembered, so the node's create rate bounds how
// many arrive in that time: the window holds at least that many
// (createNonces).
const maxCreateNonces = 1 << 18

// createNonces is the replay window's size for quotas q: room for every
// create the node's rate allows in protocol.ReplayMemory, bursts
// included, and never less than maxCreateNonces.
func createNonces(q Quotas) int {
	return max(maxCreateNonces, int(q.CreateRate*protocol.ReplayMemory.Seconds())+2*burstOf(q.CreateRate))
}

// creator is who creates a session, as quotas count it: "ed25519:<key>"
// for a signed request, "addr:<ip>" for an unsigned one (open mode).
type creator string

// admitter decides admission and keeps the counts quotas are checked
// against.
type admitter struct {
	n   *Node
	cfg Admission
	q   Quotas

	mu       sync.Mutex
	nonces   *protocol.ReplayWindow // create requests accepted recently
	members  map[string]memberAnswer
	usage    map[creator]*usage
	sessions int
	stored   int64
	rates    rateLimits
}

type memberAnswer struct {
	member bool
	until  time.Time
}

func newAdmitter(n *Node, cfg Admission) (*admitter, error) {
	if cfg.Mode == "" {
		cfg.Mode = AdmitOpen
	}
	switch cfg.Mode {
	case AdmitOpen:
	case AdmitAllowList:
		if len(cfg.AllowKeys) == 0 {
			return nil, errors.New("node: admission mode allow-list with no key allowed")
		}
	case AdmitToken:
		if len(cfg.TokenIssuers) == 0 {
			return nil, errors.New("node: admission mode token with no token issuer")
		}
	case AdmitConsortium:
		if cfg.Members == nil {
			return nil, errors.New("node: admission mode consortium needs a ledger to read the members from")
		}
	default:
		return nil, fmt.Errorf("node: admission mode %q: want one of %v", cfg.Mode, Modes)
	}
	a := &admitter{n: n, cfg: cfg, q: cfg.Quotas.withDefaults(), members: map[string]memberAnswer{}, usage: map[creator]*usage{}}
	a.nonces = protocol.NewReplayWindow(createNonces(a.q))
	a.rates = newRateLimits(a.q)
	return a, nil
}

// admit decides whether the request may create a session, and says who
// its creator is. It runs before the policy is parsed: a signature and a
// table lookup (a ledger query at most every memberCacheTTL per key).
func (a *admitter) admit(ctx context.Context, req *cloisterv1.CreateSessionRequest, peer string, now time.Time) (creator, error) {
	auth := req.Auth
	if auth == nil || auth.Principal == "" {
		if a.cfg.Mode != AdmitOpen {
			return "", refused(connect.CodeUnauthenticated, ruleAdmission, "this node admits creators by %s: sign the create request with your key (cloister session create --key)", a.describe())
		}
		return creator("addr:" + peerIP(peer)), nil
	}
	key, err := keys.ParseSigningKey(auth.Principal)
	if err != nil {
		return "", refused(connect.CodeInvalidArgument, ruleAdmission, "create request: creator key: %v", err)
	}
	if err := a.checkSignature(key, auth, req.Policy, now); err != nil {
		return "", err
	}
	c := creator(keys.FormatSigningKey(key))
	switch a.cfg.Mode {
	case AdmitAllowList:
		for _, k := range a.cfg.AllowKeys {
			if k.Equal(key) {
				return c, nil
			}
		}
		return "", refused(connect.CodePermissionDenied, ruleAdmission, "creator %s is not on this node's allow-list (the operator adds it with --admit-key)", c)
	case AdmitToken:
		if req.AdmissionToken == "" {
			return "", refused(connect.CodePermissionDenied, ruleAdmission, "this node admits creators by operator-signed token; creator %s presented none (cloister session create --token)", c)
		}
		if err := VerifyAdmissionToken(req.AdmissionToken, a.cfg.TokenIssuers, key, a.n.PlatformKey(), now); err != nil {
			return "", refused(connect.CodePermissionDenied, ruleAdmission, "creator %s: %v", c, err)
		}
		return c, nil
	case AdmitConsortium:
		ok, err := a.isMember(ctx, key, now)
		if err != nil {
			return "", connect.NewError(connect.CodeUnavailable, fmt.Errorf("checking consortium membership of %s on the ledger: %w", c, err))
		}
		if !ok {
			return "", refused(connect.CodePermissionDenied, ruleAdmission, "creator %s is not a consortium member on this node's ledger (a member.admitted entry by a validator admits it)", c)
		}
		return c, nil
	}
	return c, nil
}

func (a *admitter) describe() string {
	switch a.cfg.Mode {
	case AdmitAllowList:
		return "allow-list"
	case AdmitToken:
		return "operator-signed token"
	case AdmitConsortium:
		return "consortium membership on its ledger"
	}
	return "open admission"
}

// checkSignature checks the creator's signature over the create request,
// its freshness, and that its nonce was not seen before.
func (a *admitter) checkSignature(key ed25519.PublicKey, auth *cloisterv1.SignedRequest, doc []byte, now time.Time) error {
	if len(auth.Nonce) < 16 || len(auth.Nonce) > 64 {
		return refused(connect.CodeInvalidArgument, ruleAdmission, "create request nonce is %d bytes, want 16 to 64", len(auth.Nonce))
	}
	msg := protocol.RequestMessage("", protocol.OpCreateSession, "", sha256.Sum256(doc), [32]byte{}, auth.UnixMs, auth.Nonce)
	if !ed25519.Verify(key, msg, auth.Signature) {
		return refused(connect.CodeUnauthenticated, ruleAdmission, "create request signature does not verify with creator key %s", auth.Principal)
	}
	t := time.UnixMilli(auth.UnixMs)
	if d := now.Sub(t); d > protocol.MaxRequestSkew || d < -protocol.MaxRequestSkew {
		return refused(connect.CodePermissionDenied, ruleAdmission, "create request is dated %s, more than %s from the node's clock %s",
			t.UTC().Format(time.RFC3339), protocol.MaxRequestSkew, now.UTC().Format(time.RFC3339))
	}
	return nil
}

// admitNonce remembers the nonce of a create request that is to create a
// session, refusing a replay. It runs once the creator is admitted and
// the request is within every quota and rate (reserveSession), so that
// only the sessions the rates allow fill the window: requests refused
// before, such as an unadmitted key's, are not remembered and cannot
// crowd out those of admitted creators. Unsigned requests (open mode)
// carry none.
func (a *admitter) admitNonce(auth *cloisterv1.SignedRequest, now time.Time) error {
	if auth == nil || auth.Principal == "" {
		return nil
	}
	key, err := keys.ParseSigningKey(auth.Principal)
	if err != nil {
		return refused(connect.CodeInvalidArgument, ruleAdmission, "create request: creator key: %v", err)
	}
	var re *protocol.ReplayError
	if err := a.nonces.Admit(key, auth.Nonce, now); errors.As(err, &re) {
		if re.Full {
			return refused(connect.CodeResourceExhausted, ruleCreateRate, "the node remembers %d create requests of the last %s, its limit; retry in a minute (the operator lowers --create-rate)", re.Max, protocol.ReplayMemory)
		}
		return refused(connect.CodePermissionDenied, ruleAdmission, "create request of %s replays one already seen", auth.Principal)
	}
	return nil
}

func (a *admitter) isMember(ctx context.Context, key ed25519.PublicKey, now time.Time) (bool, error) {
	k := string(key)
	a.mu.Lock()
	ans, ok := a.members[k]
	a.mu.Unlock()
	if ok && now.Before(ans.until) {
		return ans.member, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	member, err := a.cfg.Members.IsMember(ctx, key)
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.members) > 4096 {
		clear(a.members)
	}
	a.members[k] = memberAnswer{member: member, until: now.Add(memberCacheTTL)}
	return member, nil
}

// peerIP is the IP address of a connect peer address "host:port".
func peerIP(addr string) string {
	if ap, err := netip.ParseAddrPort(addr); err == nil {
		return ap.Addr().Unmap().String()
	}
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// CheckListen refuses to serve a node in open admission mode on an
// address reachable beyond loopback, unless the operator said so
// (Admission.AllowOpen). An unspecified address (0.0.0.0, ::) listens on
// every interface, so it is not loopback.
func CheckListen(addr net.Addr, adm Admission) error {
	if (adm.Mode != "" && adm.Mode != AdmitOpen) || adm.AllowOpen {
		return nil
	}
	if isLoopback(addr) {
		return nil
	}
	return fmt.Errorf("node: refusing to serve %s in open admission mode: anyone who reaches it could create sessions. "+
		"Choose --admission allow-list, token or consortium, or pass --allow-open to accept anyone (within the quotas)", addr)
}

func isLoopback(addr net.Addr) bool {
	switch a := addr.(type) {
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	case *net.UnixAddr:
		return true
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
