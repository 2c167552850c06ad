package receipt

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/attest"
	_ "github.com/cloisterhq/cloister/attest/all" // every evidence class a node may attest as
	"github.com/cloisterhq/cloister/attest/ratls"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/ledger/verify"
	"github.com/cloisterhq/cloister/policy"
)

// ErrInvalid marks a receipt that failed a check; the error says which.
var ErrInvalid = errors.New("receipt invalid")

// Trust is the verifier's trust root: a validator set it pinned (with
// `cloister ledger verify --state`, say) and optionally a checkpoint it
// verified before, which the receipt's checkpoint must be consistent with.
type Trust struct {
	ValidatorSet *verify.ValidatorSet
	// Checkpoint is a signed note, opened against ValidatorSet; may be nil.
	Checkpoint []byte
}

// Check is one check Verify made. IDs are shared with the browser
// verifier, so a page can show both side by side.
type Check struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

// Check IDs.
const (
	CheckTrustRoot   = "trust-root"
	CheckCheckpoint  = "checkpoint"
	CheckConsistency = "consistency"
	CheckEntries     = "entries"
	CheckNode        = "node"
	CheckPolicy      = "policy"
	CheckEvidence    = "evidence"
	CheckUploads     = "uploads"
	CheckResult      = "result"
)

// Result is what Verify found: every check, the decoded session, and
// notes on what it could not check.
type Result struct {
	Valid      bool     `json:"valid"`
	Pinned     bool     `json:"pinned"` // the trust root came from the verifier, not the receipt
	Session    string   `json:"session"`
	PolicyHash string   `json:"policy_hash"`
	Checks     []Check  `json:"checks"`
	Notes      []string `json:"notes,omitempty"`
	// Decoded content, for display.
	Checkpoint *CheckpointInfo              `json:"checkpoint,omitempty"`
	Claims     *ClaimsInfo                  `json:"claims,omitempty"`
	Outputs    map[string]map[string]string `json:"outputs,omitempty"`
}

// CheckpointInfo describes the receipt's checkpoint as verified.
type CheckpointInfo struct {
	Origin      string   `json:"origin"`
	Size        uint64   `json:"size"`
	Root        string   `json:"root"` // base64
	Signers     []string `json:"signers"`
	SignedPower int64    `json:"signed_power"`
	TotalPower  int64    `json:"total_power"`
}

// ClaimsInfo is the verified evidence, decoded.
type ClaimsInfo struct {
	Class             string            `json:"class"`
	Format            string            `json:"format"`
	Measurement       string            `json:"measurement,omitempty"`
	Measurements      map[string]string `json:"measurements,omitempty"`
	HardwareProtected bool              `json:"hardware_protected"`
	Signer            string            `json:"signer,omitempty"`
	IssuedAt          time.Time         `json:"issued_at,omitzero"`
	Warnings          []string          `json:"warnings,omitempty"`
	// Checked lists what the evidence check established, in words.
	Checked []string `json:"checked"`
}

// Verify checks a receipt against trust (nil: the receipt's own validator
// set, which the result says proves nothing about which ledger it is). It
// always returns a Result listing the checks made; the error, wrapping
// ErrInvalid, names the first that failed.
func Verify(ctx context.Context, r *Receipt, trust *Trust) (*Result, error) {
	v := &verifier{r: r, res: &Result{Session: r.Session, PolicyHash: r.PolicyHash}}
	v.run(ctx, trust)
	for _, c := range v.res.Checks {
		if !c.OK {
			return v.res, fmt.Errorf("%w: %s: %s", ErrInvalid, c.Name, c.Detail)
		}
	}
	v.res.Valid = true
	return v.res, nil
}

type verifier struct {
	r   *Receipt
	res *Result

	cp       *verify.Checkpoint
	pol      *policy.Policy
	platform ed25519.PublicKey
	// The session's entries, decoded and verified, by kind/event.
	entries  []decoded
	created  *decoded
	result   *decoded
	uploads  []*decoded
	register *decoded
	spki     []byte // the attested session key (DER SubjectPublicKeyInfo)
}

type decoded struct {
	index uint64
	se    *verify.SignedEntry
	body  map[string]any
	event string // for session.event entries
}

func (v *verifier) add(id, name string, err error, detail string) bool {
	c := Check{ID: id, Name: name, OK: err == nil, Detail: detail}
	if err != nil {
		c.Detail = err.Error()
	}
	v.res.Checks = append(v.res.Checks, c)
	return err == nil
}

func (v *verifier) note(format string, args ...any) {
	v.res.Notes = append(v.res.Notes, fmt.Sprintf(format, args...))
}

func (v *verifier) run(ctx context.Context, trust *Trust) {
	if err := protocol.ValidSessionID(v.r.Session); err != nil {
		v.add(CheckEntries, "session id", err, "")
		return
	}
	set, ok := v.trustRoot(trust)
	if !ok {
		return
	}
	if !v.checkpoint(set, trust) {
		return
	}
	if !v.checkEntries() {
		return
	}
	if !v.checkNode() {
		return
	}
	if !v.checkPolicy() {
		return
	}
	v.checkEvidence(ctx)
	v.checkUploads()
	v.checkResult()
}

func (v *verifier) trustRoot(trust *Trust) (*verify.ValidatorSet, bool) {
	own := v.r.Ledger.ValidatorSet
	if err := own.Check(); err != nil {
		v.add(CheckTrustRoot, "validator set", fmt.Errorf("the receipt's validator set: %v", err), "")
		return nil, false
	}
	if trust == nil || trust.ValidatorSet == nil {
		v.add(CheckTrustRoot, "trust root", nil, "none given: the receipt's own validator set was used, so this proves only that the receipt is consistent, not which ledger it comes from (pass --ledger-state)")
		v.note("not pinned: a receipt checked against the validator set it carries proves nothing about which ledger holds it")
		return own, true
	}
	if err := trust.ValidatorSet.Check(); err != nil {
		v.add(CheckTrustRoot, "trust root", fmt.Errorf("the pinned validator set: %v", err), "")
		return nil, false
	}
	if !trust.ValidatorSet.Equal(own) {
		v.add(CheckTrustRoot, "trust root", fmt.Errorf("the receipt's validator set differs from the pinned one (%s): another ledger, or a forged receipt", trust.ValidatorSet.Diff(own)), "")
		return nil, false
	}
	v.res.Pinned = true
	v.add(CheckTrustRoot, "trust root", nil, fmt.Sprintf("the receipt's validator set is the pinned set of %s (%d validators)", trust.ValidatorSet.Origin, len(trust.ValidatorSet.Validators)))
	return trust.ValidatorSet, true
}

func (v *verifier) checkpoint(set *verify.ValidatorSet, trust *Trust) bool {
	cp, err := verify.OpenCheckpoint([]byte(v.r.Ledger.Checkpoint), set)
	if err != nil {
		v.add(CheckCheckpoint, "checkpoint", err, "")
		return false
	}
	v.cp = cp
	v.res.Checkpoint = &CheckpointInfo{Origin: cp.Origin, Size: cp.Size, Root: base64.StdEncoding.EncodeToString(cp.Root[:]),
		Signers: cp.Signers, SignedPower: cp.SignedPower, TotalPower: cp.TotalPower}
	v.add(CheckCheckpoint, "checkpoint", nil, fmt.Sprintf("size %d, signed by validators holding power %d of %d (more than 2/3 needed)", cp.Size, cp.SignedPower, cp.TotalPower))
	if trust == nil || len(trust.Checkpoint) == 0 {
		return true
	}
	pinned, err := verify.OpenCheckpoint(trust.Checkpoint, trust.ValidatorSet)
	if err != nil {
		v.add(CheckConsistency, "consistency with the pinned checkpoint", fmt.Errorf("the pinned checkpoint: %v", err), "")
		return false
	}
	if pinned.Size == cp.Size {
		err := verify.CheckConsistency(nil, pinned, cp)
		return v.add(CheckConsistency, "consistency with the pinned checkpoint", err, fmt.Sprintf("same size %d, same root", cp.Size))
	}
	c := v.r.Ledger.Consistency
	if c == nil || c.Trusted != pinned.Size {
		v.note("consistency with the pinned checkpoint (size %d) not checked: the receipt carries no consistency proof from that size (`cloister receipt get --ledger-state` adds one)", pinned.Size)
		return true
	}
	older, newer := pinned, cp
	if cp.Size < pinned.Size {
		older, newer = cp, pinned
	}
	p := &verify.ConsistencyProof{From: older.Size, To: newer.Size}
	for _, h := range c.Hashes {
		if len(h) != 32 {
			return v.add(CheckConsistency, "consistency with the pinned checkpoint", errors.New("a proof hash is not 32 bytes"), "")
		}
		p.Hashes = append(p.Hashes, [32]byte(h))
	}
	return v.add(CheckConsistency, "consistency with the pinned checkpoint", verify.CheckConsistency(p, older, newer),
		fmt.Sprintf("the log of size %d extends the log of size %d", newer.Size, older.Size))
}

// checkEntries decodes every entry and checks its form, signature and
// inclusion in the checkpoint.
func (v *verifier) checkEntries() bool {
	seen := map[uint64]bool{}
	for _, e := range v.r.Ledger.Entries {
		if seen[e.Index] {
			return v.add(CheckEntries, "ledger entries", fmt.Errorf("entry %d appears twice", e.Index), "")
		}
		seen[e.Index] = true
		tx := []byte(e.Tx)
		se, err := verify.DecodeEntry(tx)
		if err != nil {
			return v.add(CheckEntries, "ledger entries", fmt.Errorf("entry %d: %v", e.Index, err), "")
		}
		if err := se.VerifySignature(); err != nil {
			return v.add(CheckEntries, "ledger entries", fmt.Errorf("entry %d (%s): signature by %s: %v", e.Index, se.Entry.Kind, se.Entry.Submitter, err), "")
		}
		p := &verify.InclusionProof{Index: e.Index, Size: v.cp.Size, LeafHash: verify.LeafHash(tx)}
		for _, h := range e.Proof {
			if len(h) != 32 {
				return v.add(CheckEntries, "ledger entries", fmt.Errorf("entry %d: a proof hash is not 32 bytes", e.Index), "")
			}
			p.Hashes = append(p.Hashes, [32]byte(h))
		}
		if err := verify.CheckInclusion(p, v.cp, e.Index, p.LeafHash); err != nil {
			return v.add(CheckEntries, "ledger entries", err, "")
		}
		d := decoded{index: e.Index, se: se}
		if err := json.Unmarshal(se.Entry.Body, &d.body); err != nil {
			return v.add(CheckEntries, "ledger entries", fmt.Errorf("entry %d: body: %v", e.Index, err), "")
		}
		d.event, _ = d.body["event"].(string)
		v.entries = append(v.entries, d)
	}
	sort.Slice(v.entries, func(i, j int) bool { return v.entries[i].index < v.entries[j].index })
	return v.add(CheckEntries, "ledger entries", nil, fmt.Sprintf("%d entries: each in canonical form, signed by its submitter, and included in the checkpoint (RFC 6962 audit paths)", len(v.entries)))
}

// Ledger entry kinds a receipt holds (ledger.Kind… and node.LedgerKind…;
// spelled here so that a verifier does not link the state machine).
const (
	kindRegistered = "node.registered"
	kindEvent      = "session.event"
	kindCommitted  = "result.committed"
)

// checkNode: the session's entries are the node's, registered on the
// ledger with the platform key and class the receipt names, about this
// session and this policy.
func (v *verifier) checkNode() bool {
	pk, err := protocol.ParseEd25519Key(v.r.Node.PlatformKey)
	if err != nil {
		return v.add(CheckNode, "node", fmt.Errorf("platform key: %v", err), "")
	}
	v.platform = pk
	for i := range v.entries {
		d := &v.entries[i]
		if d.se.Entry.Submitter != v.r.Node.PlatformKey {
			return v.add(CheckNode, "node", fmt.Errorf("entry %d (%s) is signed by %s, not by the node's platform key %s", d.index, d.se.Entry.Kind, d.se.Entry.Submitter, v.r.Node.PlatformKey), "")
		}
		switch string(d.se.Entry.Kind) {
		case kindRegistered:
			if v.register != nil {
				return v.add(CheckNode, "node", fmt.Errorf("two node.registered entries (%d and %d)", v.register.index, d.index), "")
			}
			if str(d.body, "platform_key") != v.r.Node.PlatformKey || str(d.body, "class") != v.r.Node.IsolateClass {
				return v.add(CheckNode, "node", fmt.Errorf("node.registered entry %d registers %s as class %q, not the receipt's node", d.index, str(d.body, "platform_key"), str(d.body, "class")), "")
			}
			v.register = d
			continue
		case kindEvent, kindCommitted:
		default:
			return v.add(CheckNode, "node", fmt.Errorf("entry %d is a %s entry, which no session receipt holds", d.index, d.se.Entry.Kind), "")
		}
		if str(d.body, "session") != v.r.Session || str(d.body, "policy_hash") != v.r.PolicyHash {
			return v.add(CheckNode, "node", fmt.Errorf("entry %d is about session %q under policy %q, not this receipt's", d.index, str(d.body, "session"), str(d.body, "policy_hash")), "")
		}
		switch {
		case d.se.Entry.Kind == kindCommitted:
			if v.result != nil {
				return v.add(CheckNode, "node", fmt.Errorf("two result.committed entries (%d and %d)", v.result.index, d.index), "")
			}
			v.result = d
		case d.event == "session.created":
			v.created = d
		case d.event == "session.program_uploaded", d.event == "session.input_uploaded":
			v.uploads = append(v.uploads, d)
		}
	}
	switch {
	case v.register == nil:
		return v.add(CheckNode, "node", errors.New("no node.registered entry: the node's registration is not in the receipt"), "")
	case v.created == nil:
		return v.add(CheckNode, "node", errors.New("no session.created entry"), "")
	case v.register.index > v.created.index:
		return v.add(CheckNode, "node", fmt.Errorf("the node registered (entry %d) after the session was created (entry %d)", v.register.index, v.created.index), "")
	case str(v.created.body, "isolate_class") != v.r.Node.IsolateClass || str(v.created.body, "platform_key") != v.r.Node.PlatformKey:
		return v.add(CheckNode, "node", fmt.Errorf("session.created entry %d names class %q and key %s, not the receipt's node", v.created.index, str(v.created.body, "isolate_class"), str(v.created.body, "platform_key")), "")
	}
	return v.add(CheckNode, "node", nil, fmt.Sprintf("registered at #%d as class %s; every session entry is signed by its platform key %s and names this session and policy hash", v.register.index, v.r.Node.IsolateClass, v.r.Node.PlatformKey))
}

func (v *verifier) checkPolicy() bool {
	sum := sha256.Sum256([]byte(v.r.Policy))
	if hex.EncodeToString(sum[:]) != v.r.PolicyHash {
		return v.add(CheckPolicy, "policy", fmt.Errorf("the policy text hashes to %x, not to the policy hash %s the entries name", sum, v.r.PolicyHash), "")
	}
	pol, err := policy.Parse([]byte(v.r.Policy))
	if err != nil {
		return v.add(CheckPolicy, "policy", err, "")
	}
	if !bytes.Equal(pol.Canonical(), []byte(v.r.Policy)) {
		return v.add(CheckPolicy, "policy", errors.New("the policy text is not in canonical form"), "")
	}
	v.pol = pol
	return v.add(CheckPolicy, "policy", nil, fmt.Sprintf("%q: its canonical text hashes to %s", pol.Name, v.r.PolicyHash))
}

// checkEvidence: the evidence is the one in the certificate and the one
// session.created committed to; it verifies under the policy's isolate
// entry, as of the session's creation; and it binds the certificate's key,
// the policy hash and the HPKE key.
func (v *verifier) checkEvidence(ctx context.Context) bool {
	fail := func(format string, args ...any) bool {
		return v.add(CheckEvidence, "evidence", fmt.Errorf(format, args...), "")
	}
	cert, ev, err := certificateEvidence(v.r.SessionCertificate)
	if err != nil {
		return fail("%v", err)
	}
	if ev.Class != v.r.Evidence.Class || !bytes.Equal(ev.Data, v.r.Evidence.Data) {
		return fail("the receipt's evidence is not the evidence in the session certificate")
	}
	class := attest.Class(ev.Class)
	if ev.Class != v.r.Node.IsolateClass {
		return fail("the evidence is of class %s, the node attests as %s", ev.Class, v.r.Node.IsolateClass)
	}
	sum := sha256.Sum256(ev.Data)
	if got := str(v.created.body, "evidence_sha256"); got != hex.EncodeToString(sum[:]) {
		return fail("the evidence hashes to %x, but session.created (entry %d) committed to %s", sum, v.created.index, got)
	}
	ref, opts, err := v.pol.ReferenceValues(class)
	if err != nil {
		return fail("%v", err)
	}
	at := v.created.se.Entry.ParsedTime()
	opts.Now = at
	claims, err := ratls.VerifyCertificateContext(ctx, v.r.SessionCertificate, v.r.Evidence.Collateral, opts)
	if err != nil {
		return fail("%v", err)
	}
	hash, _ := hex.DecodeString(v.r.PolicyHash)
	nonce := protocol.RATLSNonce([32]byte(hash), v.r.HPKEPublicKey)
	if !bytes.Equal(claims.Nonce, nonce[:]) {
		return fail("the evidence's nonce does not bind this policy hash and the receipt's HPKE key")
	}
	if err := attest.Validate(claims, ref, at); err != nil {
		return fail("%v", err)
	}
	ci := &ClaimsInfo{Class: string(claims.Class), Format: claims.Format, Measurement: hex.EncodeToString(claims.Measurement),
		HardwareProtected: claims.HardwareProtected, Signer: claims.Signer, IssuedAt: claims.IssuedAt, Warnings: claims.Warnings}
	if len(claims.Measurements) > 0 {
		ci.Measurements = map[string]string{}
		for k, m := range claims.Measurements {
			ci.Measurements[k] = hex.EncodeToString(m)
		}
	}
	ci.Checked = []string{
		"it is the evidence session.created committed to (SHA-256 " + hex.EncodeToString(sum[:]) + ")",
		fmt.Sprintf("it verifies as %s evidence under the policy's isolate entry (pinned keys or roots, reference values), as of the session's creation %s", claims.Class, at.UTC().Format(time.RFC3339)),
		"its report data binds the claims buffer, whose pubkey-hash is the session certificate's key",
		"its nonce binds the policy hash and the session's HPKE key",
	}
	v.res.Claims = ci
	v.spki = cert.RawSubjectPublicKeyInfo
	return v.add(CheckEvidence, "evidence", nil, strings.Join(ci.Checked, "; "))
}

// checkUploads: each upload entry carries its principal's signature over
// the request, which verifies under the signing key the policy lists.
func (v *verifier) checkUploads() bool {
	hash, _ := hex.DecodeString(v.r.PolicyHash)
	for _, d := range v.uploads {
		op, kind := protocol.OpUploadInput, "input"
		if d.event == "session.program_uploaded" {
			op, kind = protocol.OpUploadProgram, "program"
		}
		who, name := str(d.body, "principal"), str(d.body, "name")
		p, ok := v.pol.Principal(who)
		if !ok {
			return v.add(CheckUploads, "uploads", fmt.Errorf("entry %d: %q is not a principal of the policy", d.index, who), "")
		}
		pub, err := protocol.ParseEd25519Key(p.SigningKey)
		if err != nil {
			return v.add(CheckUploads, "uploads", fmt.Errorf("principal %q: %v", who, err), "")
		}
		env, err1 := hex.DecodeString(str(d.body, "envelope_sha256"))
		sig, err2 := base64.StdEncoding.DecodeString(str(d.body, "signature"))
		nonce, err3 := base64.StdEncoding.DecodeString(str(d.body, "nonce"))
		ms, ok := d.body["unix_ms"].(float64)
		if err1 != nil || err2 != nil || err3 != nil || !ok || len(env) != 32 {
			return v.add(CheckUploads, "uploads", fmt.Errorf("entry %d: the upload's envelope hash, signature, time or nonce is malformed", d.index), "")
		}
		msg := protocol.RequestMessage(v.r.Session, op, name, [32]byte(env), [32]byte(hash), int64(ms), nonce)
		if !ed25519.Verify(pub, msg, sig) {
			return v.add(CheckUploads, "uploads", fmt.Errorf("entry %d: the %s %q upload's signature does not verify under principal %q's key", d.index, kind, name, who), "")
		}
	}
	if len(v.uploads) == 0 {
		v.note("no upload in the receipt: nothing was provisioned, or the entries are still being recorded")
	}
	return v.add(CheckUploads, "uploads", nil, fmt.Sprintf("%d uploads, each signed by the principal the policy lists, over the session, the item, its envelope hash and the policy hash", len(v.uploads)))
}

// checkResult: the result commitment is signed by the attested session
// key.
func (v *verifier) checkResult() bool {
	if v.result == nil {
		v.note("no result.committed entry: the session has not finished (or failed)")
		return true
	}
	if v.spki == nil {
		return v.add(CheckResult, "result commitment", errors.New("the session key is not attested (the evidence check failed)"), "")
	}
	rc, err := client.ParseResultCommitment(v.result.se.Entry.Body)
	if err != nil {
		return v.add(CheckResult, "result commitment", err, "")
	}
	if err := rc.Verify(v.spki); err != nil {
		return v.add(CheckResult, "result commitment", err, "")
	}
	v.res.Outputs = rc.Outputs
	n := 0
	for _, rs := range rc.Outputs {
		n += len(rs)
	}
	return v.add(CheckResult, "result commitment", nil, fmt.Sprintf("entry %d: %d output envelope hashes, signed by the attested session key (ECDSA P-256, SHA-256 %s)", v.result.index, n, protocol.SPKIHash(v.spki)))
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}
