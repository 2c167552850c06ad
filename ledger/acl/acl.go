package acl

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
)

// Entry kinds this package gives the form of.
const (
	KindArtifactRegistered = "artifact.registered"
	KindGranted            = "acl.granted"
	KindRevoked            = "acl.revoked"
	KindDelegated          = "acl.delegated"
	KindKeyReleased        = "key.released"
)

// Bounds on what one entry may carry.
const (
	MaxBrokers      = 16
	MaxMeasurements = 32
	MaxClasses      = 8
	MaxNodes        = 64
	// MaxWindow bounds a grant's or a delegation's life: a key released
	// on a grant of years would be a key given away.
	MaxWindow = 366 * 24 * time.Hour
	// MaxUses bounds a grant's uses.
	MaxUses = 1 << 20
	// MaxRateGrants bounds a rate's grants per window: the state machine
	// keeps the time of each grant inside the window.
	MaxRateGrants = 1024
	// MaxSVNComponents bounds the components of one class's TCB floor.
	MaxSVNComponents = 32
	maxID            = 128
)

// TimeLayout is the one spelling of the times these entries carry: UTC,
// whole seconds.
const TimeLayout = "2006-01-02T15:04:05Z"

// FormatTime writes t in TimeLayout.
func FormatTime(t time.Time) string { return t.UTC().Truncate(time.Second).Format(TimeLayout) }

// ParseTime reads TimeLayout, and only that spelling.
func ParseTime(s string) (time.Time, error) {
	t, err := time.Parse(TimeLayout, s)
	if err != nil || t.Format(TimeLayout) != s {
		return time.Time{}, fmt.Errorf("time %.40q: want %s (UTC, whole seconds)", s, TimeLayout)
	}
	return t, nil
}

// Artifact is the body of artifact.registered: a sealed program or data
// file (package sealed) by the digest of its ciphertext, the SHA-256 of its
// plaintext, and where its content key is held. The submitter is its
// owner; an artifact is (owner, digest), so a second party registering the
// same digest makes a different artifact, with no say over the owner's.
//
// Brokers[i] holds share i+1 of the content key; Threshold shares recover
// it. Commitment is the Feldman commitment of the sharing (package share),
// Threshold group elements in hex, against which a node checks each share
// a broker sends before it combines them.
type Artifact struct {
	Digest          string   `json:"digest"`
	PlaintextSHA256 string   `json:"plaintext_sha256"`
	Brokers         []string `json:"brokers"`
	Threshold       int      `json:"threshold"`
	Commitment      []string `json:"commitment"`
}

// Grantee is who a grant lets obtain the key: a specific isolate (Node and
// Session, the session's policy as its session.created entry names it), or
// any isolate of Class whose measurement is one of Measurements.
type Grantee struct {
	Node         string   `json:"node,omitempty"`
	Session      string   `json:"session,omitempty"`
	Class        string   `json:"class,omitempty"`
	Measurements []string `json:"measurements,omitempty"`
}

// Specific reports whether g names one isolate (node and session).
func (g Grantee) Specific() bool { return g.Node != "" }

// Grant is the body of acl.granted: the owner of an artifact (or a
// delegate, naming its delegation) lets Grantee obtain its key between
// NotBefore (if set) and NotAfter, judged by block time, for MaxUses
// distinct sessions.
type Grant struct {
	Artifact   string  `json:"artifact"`
	Owner      string  `json:"owner"`
	Grantee    Grantee `json:"grantee"`
	NotBefore  string  `json:"not_before,omitempty"`
	NotAfter   string  `json:"not_after"`
	MaxUses    uint64  `json:"max_uses"`
	Delegation *uint64 `json:"delegation,omitempty"`
}

// Limits bound what a delegate may grant. Empty lists leave that dimension
// open; zero numbers too, except MaxUses and MaxDurationSeconds, which a
// delegation must set.
type Limits struct {
	Classes      []string `json:"classes,omitempty"`
	Measurements []string `json:"measurements,omitempty"`
	Nodes        []string `json:"nodes,omitempty"`
	// Organisations (rule version 5 on) are consortium members' keys: a
	// grant under the delegation must name a specific isolate whose node
	// the ledger records as run by one of them.
	Organisations      []string `json:"organisations,omitempty"`
	MaxDurationSeconds uint64   `json:"max_duration_seconds"`
	MaxUses            uint64   `json:"max_uses"`
	MaxGrants          uint64   `json:"max_grants,omitempty"`
	// MinTCB (rule version 8 on) sets, per isolate class, a floor for
	// security-version components of the isolate's verified evidence (the
	// components attest.Claims.SVN names: "snp", "microcode",
	// "tee_tcb_svn0", "pce_svn", ...). A grant under the delegation must
	// name a specific isolate; if its node's class has a floor, the
	// node's recorded evidence, verified at block time, must meet every
	// component of it, and so must the evidence a broker releases on.
	// A class without an entry has no floor.
	MinTCB map[string]map[string]uint64 `json:"min_tcb,omitempty"`
	// Rate (rule version 8 on) bounds the grants made under the
	// delegation within any window of block time.
	Rate *Rate `json:"rate,omitempty"`
}

// Rate is at most Grants grants in any WindowSeconds of block time.
type Rate struct {
	Grants        uint64 `json:"grants"`
	WindowSeconds uint64 `json:"window_seconds"`
}

// HasV8 reports whether l uses limits that rule version 8 introduced.
func (l Limits) HasV8() bool { return len(l.MinTCB) > 0 || l.Rate != nil }

// CheckTCB judges security versions svn (verified from an isolate's
// evidence of class) against the floor l sets for that class: nil when
// the class has no floor or every floored component is at or above it.
func (l Limits) CheckTCB(class string, svn map[string]uint64) error {
	floor := l.MinTCB[class]
	for _, comp := range slices.Sorted(maps.Keys(floor)) {
		got, ok := svn[comp]
		if !ok {
			return fmt.Errorf("%w: the delegation sets a %s floor on TCB component %q (at least %d) and the isolate's evidence reports no such component", ErrExceeds, class, comp, floor[comp])
		}
		if got < floor[comp] {
			return fmt.Errorf("%w: TCB component %q of the isolate's %s evidence is %d, below the delegation's minimum %d", ErrExceeds, comp, class, got, floor[comp])
		}
	}
	return nil
}

// Allows reports whether a grant at now is within r, given the block
// times (Unix seconds) of the grants made so far; it returns the times
// still inside the window, to which the caller appends now on success.
func (r *Rate) Allows(recent []int64, now time.Time) ([]int64, error) {
	if r == nil {
		return nil, nil
	}
	from := now.Unix() - int64(r.WindowSeconds)
	var keep []int64
	for _, t := range recent {
		if t > from {
			keep = append(keep, t)
		}
	}
	if uint64(len(keep)) >= r.Grants {
		return keep, fmt.Errorf("%w: the delegation allows %d grants in any %s of block time, and %d were made since %s", ErrExceeds,
			r.Grants, time.Duration(r.WindowSeconds)*time.Second, len(keep), FormatTime(time.Unix(keep[0], 0)))
	}
	return keep, nil
}

// Delegation is the body of acl.delegated: the owner of an artifact lets
// Delegate grant its key, within Limits, until NotAfter.
type Delegation struct {
	Artifact string `json:"artifact"`
	Delegate string `json:"delegate"`
	NotAfter string `json:"not_after"`
	Limits   Limits `json:"limits"`
}

// Revocation is the body of acl.revoked: exactly one of Grant and
// Delegation, the index of the entry it ends.
type Revocation struct {
	Grant      *uint64 `json:"grant,omitempty"`
	Delegation *uint64 `json:"delegation,omitempty"`
}

// Release is the body of key.released: broker Share of the artifact
// released its share of the key on Grant to the isolate (Node, Session,
// running PolicyHash), whose evidence (SHA-256 of its JSON) showed Class
// and Measurement and bound that policy hash.
type Release struct {
	Artifact       string `json:"artifact"`
	Owner          string `json:"owner"`
	Grant          uint64 `json:"grant"`
	Node           string `json:"node"`
	Session        string `json:"session"`
	PolicyHash     string `json:"policy_hash"`
	Class          string `json:"class"`
	Measurement    string `json:"measurement"`
	EvidenceSHA256 string `json:"evidence_sha256"`
	Share          int    `json:"share"`
	// SVN (rule version 8 on) are the security versions the broker
	// verified in the evidence, for the components the floor of the
	// grant's delegation names (none when it names none).
	SVN map[string]uint64 `json:"svn,omitempty"`
}

// Decode reads an entry body of kind into v: known fields only, one
// value, nothing after. The marketplace's bodies (package deal) are read
// the same way.
func Decode(kind string, body []byte, v any) error { return decode(kind, body, v) }

// decode reads body into v: known fields only, one value, nothing after.
func decode(kind string, body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s body: %v", kind, err)
	}
	if dec.More() {
		return fmt.Errorf("%s body: data after the object", kind)
	}
	return nil
}

// DecodeArtifact reads and checks an artifact.registered body.
func DecodeArtifact(body []byte) (*Artifact, error) {
	var a Artifact
	if err := decode(KindArtifactRegistered, body, &a); err != nil {
		return nil, err
	}
	return &a, a.Check()
}

// Check checks a's shape.
func (a *Artifact) Check() error {
	if err := checkDigest(a.Digest); err != nil {
		return fmt.Errorf("artifact: %w", err)
	}
	if !isHex(a.PlaintextSHA256, 64) {
		return errors.New("artifact plaintext_sha256: want 64 lower-case hex digits")
	}
	if len(a.Brokers) == 0 || len(a.Brokers) > MaxBrokers {
		return fmt.Errorf("artifact brokers: want 1 to %d broker keys, got %d", MaxBrokers, len(a.Brokers))
	}
	for i, b := range a.Brokers {
		if _, err := protocol.ParseEd25519Key(b); err != nil {
			return fmt.Errorf("artifact broker %d: %v", i+1, err)
		}
		if slices.Index(a.Brokers, b) != i {
			return fmt.Errorf("artifact broker %d: listed twice", i+1)
		}
	}
	if a.Threshold < 1 || a.Threshold > len(a.Brokers) {
		return fmt.Errorf("artifact threshold %d: want 1 to the number of brokers (%d)", a.Threshold, len(a.Brokers))
	}
	if len(a.Commitment) != a.Threshold {
		return fmt.Errorf("artifact commitment: want %d elements (one per threshold share), got %d", a.Threshold, len(a.Commitment))
	}
	for i, c := range a.Commitment {
		if !isHex(c, 64) {
			return fmt.Errorf("artifact commitment %d: want 64 lower-case hex digits", i)
		}
	}
	return nil
}

// BrokerIndex returns the share number (1-based) broker key holds, 0 if
// none.
func (a *Artifact) BrokerIndex(key string) int { return slices.Index(a.Brokers, key) + 1 }

// DecodeGrant reads and checks an acl.granted body.
func DecodeGrant(body []byte) (*Grant, error) {
	var g Grant
	if err := decode(KindGranted, body, &g); err != nil {
		return nil, err
	}
	return &g, g.Check()
}

// Check checks g's shape (not its authority nor its window against a
// clock: the state machine does, at block time).
func (g *Grant) Check() error {
	if err := checkDigest(g.Artifact); err != nil {
		return fmt.Errorf("grant: %w", err)
	}
	if _, err := protocol.ParseEd25519Key(g.Owner); err != nil {
		return fmt.Errorf("grant owner: %v", err)
	}
	if err := g.Grantee.check(); err != nil {
		return err
	}
	nb, na, err := g.Window()
	if err != nil {
		return err
	}
	if !nb.IsZero() && !nb.Before(na) {
		return fmt.Errorf("grant: not_before %s is not before not_after %s", g.NotBefore, g.NotAfter)
	}
	if g.MaxUses < 1 || g.MaxUses > MaxUses {
		return fmt.Errorf("grant max_uses %d: want 1 to %d", g.MaxUses, MaxUses)
	}
	return nil
}

// Window returns the grant's not-before (zero if unset) and not-after.
func (g *Grant) Window() (nb, na time.Time, err error) {
	if g.NotBefore != "" {
		if nb, err = ParseTime(g.NotBefore); err != nil {
			return nb, na, fmt.Errorf("grant not_before: %v", err)
		}
	}
	if na, err = ParseTime(g.NotAfter); err != nil {
		return nb, na, fmt.Errorf("grant not_after: %v", err)
	}
	return nb, na, nil
}

// CheckWindow judges the window at time now (block time, for the state
// machine): inside it, or an error saying which side it is on.
func (g *Grant) CheckWindow(now time.Time) error {
	nb, na, err := g.Window()
	if err != nil {
		return err
	}
	if !nb.IsZero() && now.Before(nb) {
		return fmt.Errorf("%w: grant is valid from %s; the ledger's time is %s", ErrNotYet, g.NotBefore, FormatTime(now))
	}
	if !now.Before(na) {
		return fmt.Errorf("%w: grant was valid until %s; the ledger's time is %s", ErrExpired, g.NotAfter, FormatTime(now))
	}
	return nil
}

// Errors a caller may tell apart.
var (
	ErrExpired  = errors.New("expired")
	ErrNotYet   = errors.New("not yet valid")
	ErrExceeds  = errors.New("beyond the delegation's limits")
	ErrMismatch = errors.New("does not match the grant")
)

func (g Grantee) check() error {
	switch {
	case g.Specific():
		if g.Class != "" || len(g.Measurements) > 0 {
			return errors.New("grant grantee: name a node and session, or a class and measurements, not both")
		}
		if _, err := protocol.ParseEd25519Key(g.Node); err != nil {
			return fmt.Errorf("grant grantee node: %v", err)
		}
		if err := checkID(g.Session); err != nil {
			return fmt.Errorf("grant grantee session: %v", err)
		}
	case g.Class != "":
		if g.Session != "" {
			return errors.New("grant grantee: a class grant names no session")
		}
		if !isToken(g.Class) {
			return fmt.Errorf("grant grantee class %.40q: want lower-case letters, digits and '-'", g.Class)
		}
		if err := checkMeasurements(g.Measurements, true); err != nil {
			return fmt.Errorf("grant grantee: %v", err)
		}
	default:
		return errors.New("grant grantee: name a node and session, or a class and measurements")
	}
	return nil
}

// Matches reports whether an isolate (node, session, class, measurement
// as verified from its evidence) is g.
func (g Grantee) Matches(node, session, class, measurement string) error {
	if g.Specific() {
		if node != g.Node || session != g.Session {
			return fmt.Errorf("%w: the grant is for session %s of node %s, not session %s of node %s", ErrMismatch, g.Session, g.Node, session, node)
		}
		return nil
	}
	if class != g.Class {
		return fmt.Errorf("%w: the grant is for class %s, the isolate is %s", ErrMismatch, g.Class, class)
	}
	if !slices.Contains(g.Measurements, measurement) {
		return fmt.Errorf("%w: measurement %s is not among the grant's %d", ErrMismatch, measurement, len(g.Measurements))
	}
	return nil
}

// DecodeDelegation reads and checks an acl.delegated body.
func DecodeDelegation(body []byte) (*Delegation, error) {
	var d Delegation
	if err := decode(KindDelegated, body, &d); err != nil {
		return nil, err
	}
	return &d, d.Check()
}

// Check checks d's shape.
func (d *Delegation) Check() error {
	if err := checkDigest(d.Artifact); err != nil {
		return fmt.Errorf("delegation: %w", err)
	}
	if _, err := protocol.ParseEd25519Key(d.Delegate); err != nil {
		return fmt.Errorf("delegation delegate: %v", err)
	}
	if _, err := ParseTime(d.NotAfter); err != nil {
		return fmt.Errorf("delegation not_after: %v", err)
	}
	l := d.Limits
	if len(l.Classes) > MaxClasses {
		return fmt.Errorf("delegation limits classes: at most %d", MaxClasses)
	}
	for _, c := range l.Classes {
		if !isToken(c) {
			return fmt.Errorf("delegation limits class %.40q: want lower-case letters, digits and '-'", c)
		}
	}
	if err := checkMeasurements(l.Measurements, false); err != nil {
		return fmt.Errorf("delegation limits: %v", err)
	}
	if len(l.Nodes) > MaxNodes {
		return fmt.Errorf("delegation limits nodes: at most %d", MaxNodes)
	}
	for _, n := range l.Nodes {
		if _, err := protocol.ParseEd25519Key(n); err != nil {
			return fmt.Errorf("delegation limits node: %v", err)
		}
	}
	if len(l.Organisations) > MaxNodes {
		return fmt.Errorf("delegation limits organisations: at most %d", MaxNodes)
	}
	for _, o := range l.Organisations {
		if _, err := protocol.ParseEd25519Key(o); err != nil {
			return fmt.Errorf("delegation limits organisation: %v", err)
		}
	}
	if l.MaxDurationSeconds < 1 || l.MaxDurationSeconds > uint64(MaxWindow/time.Second) {
		return fmt.Errorf("delegation limits max_duration_seconds %d: want 1 to %d", l.MaxDurationSeconds, uint64(MaxWindow/time.Second))
	}
	if l.MaxUses < 1 || l.MaxUses > MaxUses {
		return fmt.Errorf("delegation limits max_uses %d: want 1 to %d", l.MaxUses, MaxUses)
	}
	if len(l.MinTCB) > MaxClasses {
		return fmt.Errorf("delegation limits min_tcb: at most %d classes", MaxClasses)
	}
	for class, floor := range l.MinTCB {
		if !isToken(class) {
			return fmt.Errorf("delegation limits min_tcb class %.40q: want lower-case letters, digits and '-'", class)
		}
		if err := checkSVN(floor); err != nil {
			return fmt.Errorf("delegation limits min_tcb %s: %v", class, err)
		}
	}
	if r := l.Rate; r != nil {
		if r.Grants < 1 || r.Grants > MaxRateGrants {
			return fmt.Errorf("delegation limits rate grants %d: want 1 to %d", r.Grants, MaxRateGrants)
		}
		if r.WindowSeconds < 1 || r.WindowSeconds > uint64(MaxWindow/time.Second) {
			return fmt.Errorf("delegation limits rate window_seconds %d: want 1 to %d", r.WindowSeconds, uint64(MaxWindow/time.Second))
		}
	}
	return nil
}

// checkSVN checks a map of security-version components: 1 to
// MaxSVNComponents names of lower-case letters, digits and '_'.
func checkSVN(m map[string]uint64) error {
	if len(m) == 0 || len(m) > MaxSVNComponents {
		return fmt.Errorf("want 1 to %d components", MaxSVNComponents)
	}
	for comp := range m {
		if !isComponent(comp) {
			return fmt.Errorf("component %.40q: want 1 to 32 lower-case letters, digits and '_'", comp)
		}
	}
	return nil
}

func isComponent(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return s != "" && len(s) <= 32
}

// Permits judges a grant a delegate makes under d at time now (block
// time): the window starts no earlier than now, lasts at most the
// maximum duration and ends by the delegation's end; the uses, the
// grantee's class, measurements and node are within the limits.
// class and measurement are what the ledger knows of a specific grantee's
// node (its node.registered entry); ignored for class grants.
func (d *Delegation) Permits(g *Grant, now time.Time, nodeClass, nodeMeasurement string) error {
	l := d.Limits
	dEnd, _ := ParseTime(d.NotAfter)
	nb, na, err := g.Window()
	if err != nil {
		return err
	}
	start := now
	if nb.After(now) {
		start = nb
	}
	if max := time.Duration(l.MaxDurationSeconds) * time.Second; na.Sub(start) > max {
		return fmt.Errorf("%w: the grant lasts %s from %s, the delegation allows at most %s", ErrExceeds, na.Sub(start), FormatTime(start), max)
	}
	if na.After(dEnd) {
		return fmt.Errorf("%w: the grant ends %s, after the delegation does (%s)", ErrExceeds, g.NotAfter, d.NotAfter)
	}
	if g.MaxUses > l.MaxUses {
		return fmt.Errorf("%w: the grant allows %d uses, the delegation at most %d", ErrExceeds, g.MaxUses, l.MaxUses)
	}
	class, ms := g.Grantee.Class, g.Grantee.Measurements
	if g.Grantee.Specific() {
		class, ms = nodeClass, nil
		if nodeMeasurement != "" {
			ms = []string{nodeMeasurement}
		}
		if len(l.Nodes) > 0 && !slices.Contains(l.Nodes, g.Grantee.Node) {
			return fmt.Errorf("%w: node %s is not among the delegation's %d nodes", ErrExceeds, g.Grantee.Node, len(l.Nodes))
		}
	} else if len(l.Nodes) > 0 {
		return fmt.Errorf("%w: the delegation names nodes, so a grant must name one of them, not a class", ErrExceeds)
	}
	if len(l.Classes) > 0 && !slices.Contains(l.Classes, class) {
		return fmt.Errorf("%w: class %q is not among the delegation's classes %v", ErrExceeds, class, l.Classes)
	}
	if len(l.Measurements) > 0 {
		if len(ms) == 0 {
			return fmt.Errorf("%w: the delegation allows only listed measurements and the grantee's is not known", ErrExceeds)
		}
		for _, m := range ms {
			if !slices.Contains(l.Measurements, m) {
				return fmt.Errorf("%w: measurement %s is not among the delegation's", ErrExceeds, m)
			}
		}
	}
	return nil
}

// PermitsOrganisation judges the organisation limit of d for a grant g
// whose grantee node the ledger records as run by nodeOrg ("" if it names
// none): with organisations listed, only a specific isolate of a node of
// one of them.
func (d *Delegation) PermitsOrganisation(g *Grant, nodeOrg string) error {
	orgs := d.Limits.Organisations
	switch {
	case len(orgs) == 0:
		return nil
	case !g.Grantee.Specific():
		return fmt.Errorf("%w: the delegation names organisations, so a grant must name a node and session, not a class", ErrExceeds)
	case nodeOrg == "":
		return fmt.Errorf("%w: node %s names no organisation; the delegation allows only nodes of %d organisations", ErrExceeds, g.Grantee.Node, len(orgs))
	case !slices.Contains(orgs, nodeOrg):
		return fmt.Errorf("%w: node %s is run by %s, not by one of the delegation's %d organisations", ErrExceeds, g.Grantee.Node, nodeOrg, len(orgs))
	}
	return nil
}

// DecodeRevocation reads and checks an acl.revoked body.
func DecodeRevocation(body []byte) (*Revocation, error) {
	var r Revocation
	if err := decode(KindRevoked, body, &r); err != nil {
		return nil, err
	}
	if (r.Grant == nil) == (r.Delegation == nil) {
		return nil, errors.New(`acl.revoked body: name exactly one of "grant" and "delegation" (an entry index)`)
	}
	return &r, nil
}

// DecodeRelease reads and checks a key.released body.
func DecodeRelease(body []byte) (*Release, error) {
	var r Release
	if err := decode(KindKeyReleased, body, &r); err != nil {
		return nil, err
	}
	return &r, r.Check()
}

// Check checks r's shape.
func (r *Release) Check() error {
	if err := checkDigest(r.Artifact); err != nil {
		return fmt.Errorf("release: %w", err)
	}
	for name, k := range map[string]string{"owner": r.Owner, "node": r.Node} {
		if _, err := protocol.ParseEd25519Key(k); err != nil {
			return fmt.Errorf("release %s: %v", name, err)
		}
	}
	if err := checkID(r.Session); err != nil {
		return fmt.Errorf("release session: %v", err)
	}
	if !isHex(r.PolicyHash, 64) {
		return errors.New("release policy_hash: want 64 lower-case hex digits")
	}
	if !isToken(r.Class) {
		return fmt.Errorf("release class %.40q: want lower-case letters, digits and '-'", r.Class)
	}
	if !isHex(r.Measurement, 0) || len(r.Measurement) > 128 {
		return errors.New("release measurement: want lower-case hex, at most 64 bytes")
	}
	if !isHex(r.EvidenceSHA256, 64) {
		return errors.New("release evidence_sha256: want 64 lower-case hex digits")
	}
	if r.Share < 1 || r.Share > MaxBrokers {
		return fmt.Errorf("release share %d: want 1 to %d", r.Share, MaxBrokers)
	}
	if r.SVN != nil {
		if err := checkSVN(r.SVN); err != nil {
			return fmt.Errorf("release svn: %v", err)
		}
	}
	return nil
}

// ArtifactKey is the state key of an artifact: owner key ‖ SHA-256 of
// the ciphertext.
func ArtifactKey(owner ed25519.PublicKey, digest string) []byte {
	d, _ := hex.DecodeString(strings.TrimPrefix(digest, "sha256:"))
	return append(append([]byte{}, owner...), d...)
}

func checkDigest(d string) error {
	h, ok := strings.CutPrefix(d, "sha256:")
	if !ok || !isHex(h, 64) {
		return fmt.Errorf("digest %.80q: want sha256: and 64 lower-case hex digits", d)
	}
	return nil
}

func checkMeasurements(ms []string, required bool) error {
	if required && len(ms) == 0 {
		return errors.New("measurements: at least one is required")
	}
	if len(ms) > MaxMeasurements {
		return fmt.Errorf("measurements: at most %d", MaxMeasurements)
	}
	for _, m := range ms {
		if !isHex(m, 0) || len(m) > 128 {
			return fmt.Errorf("measurement %.40q: want lower-case hex, at most 64 bytes", m)
		}
	}
	return nil
}

func checkID(s string) error {
	if s == "" || len(s) > maxID {
		return fmt.Errorf("want 1 to %d bytes", maxID)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%.40q: want lower-case letters, digits, '-' and '_'", s)
		}
	}
	return nil
}

func isHex(s string, n int) bool {
	if n > 0 && len(s) != n || s == "" || len(s)%2 != 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

func isToken(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return s != "" && len(s) <= 32
}
