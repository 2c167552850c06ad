package policy

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/cloisterhq/cloister/internal/bytesize"
	"github.com/cloisterhq/cloister/jcs"
	"github.com/cloisterhq/cloister/keys"
)

// Version is the policy format version this package reads.
const Version = 1

// MaxFileSize bounds a policy document.
const MaxFileSize = 1 << 20

// Role is what a principal may do in a session.
type Role string

// The roles of ARCHITECTURE.md "Policy".
const (
	RoleProgramProvider Role = "program-provider" // uploads programs it is listed for
	RoleDataProvider    Role = "data-provider"    // uploads inputs it is listed for
	RoleResultReader    Role = "result-reader"    // fetches outputs it is listed for
)

// Roles lists every known role.
var Roles = []Role{RoleProgramProvider, RoleDataProvider, RoleResultReader}

// Policy is one parsed policy document. Treat it as read-only after Parse:
// Canonical and Hash describe the document that was parsed, not later edits
// of the fields. Its methods only read, so a parsed Policy may be shared by
// goroutines.
type Policy struct {
	Version    int         `json:"version"`
	Name       string      `json:"name"`
	Principals []Principal `json:"principals"`
	Programs   []Program   `json:"programs"`
	Inputs     []Input     `json:"inputs,omitempty"`
	Outputs    []Output    `json:"outputs"`
	Isolates   []Isolate   `json:"isolates"`
	Limits     Limits      `json:"limits,omitzero"`
	// Deterministic asks for fixed clocks and seeded randomness, so that
	// replicas and re-executions give identical bytes.
	Deterministic bool `json:"deterministic,omitempty"`
	// Replicas is how many independent isolates run the computation and
	// must agree; absent means 1.
	Replicas int `json:"replicas,omitempty"`
	// ReplicaClasses, with Replicas > 1, is "distinct" when every replica
	// must run in an isolate of another class (sev-snp, tpm, software…);
	// absent: any class the policy accepts.
	ReplicaClasses string `json:"replica_classes,omitempty"`
	// HostCalls are the calls the program may make to its node while it
	// runs (docs/isolate.md, "Host calls"); absent: none.
	HostCalls []HostCall `json:"host_calls,omitempty"`
	// Engine is the WebAssembly engine the session's runs use ("wazero"
	// or "wasmtime"); absent: the node's own choice. A node that cannot
	// run it refuses the session. Every run's report names the engine
	// and version that ran.
	Engine  string    `json:"engine,omitempty"`
	Expires time.Time `json:"expires"`

	// canonical is the RFC 8785 form of the parsed document.
	canonical []byte
}

// Principal is a party to the computation.
type Principal struct {
	ID         string `json:"id"`
	SigningKey string `json:"signing_key"`
	// SealingKey is required for result readers: outputs are sealed to it.
	SealingKey string `json:"sealing_key,omitempty"`
	Roles      []Role `json:"roles"`
}

// Program is a WebAssembly module the session runs, named by file name and
// pinned by its SHA-256. Either a program provider uploads it (Provider),
// or it is a sealed program the node fetches and obtains the key of from
// key brokers (Sealed; docs/broker.md).
type Program struct {
	Name     string `json:"name"`
	SHA256   string `json:"sha256"`
	Provider string `json:"provider,omitempty"`
	// Sealed names a sealed program: nobody uploads it.
	Sealed *SealedProgram `json:"sealed,omitempty"`
}

// SealedProgram is an artifact on the ledger (owner, ciphertext digest)
// whose ciphertext the stores hold and whose content key the brokers
// share, Threshold of them needed. The node fetches the ciphertext,
// asks the brokers for their shares under a grant the ledger holds for
// its session, and its worker decrypts and checks the program against
// the program's sha256.
type SealedProgram struct {
	// Digest is the ciphertext's digest ("sha256:…"), the artifact's.
	Digest string `json:"digest"`
	// Owner is the artifact's owner ("ed25519:…"): an artifact is
	// (owner, digest), and only its owner's registration counts.
	Owner  string   `json:"owner"`
	Stores []string `json:"stores"`
	// Brokers pins each broker's signing key beside its URL; the
	// artifact's brokers on the ledger must be exactly these keys.
	Brokers   []SealedBroker `json:"brokers"`
	Threshold int            `json:"threshold"`
}

// SealedBroker is one key broker of a sealed program.
type SealedBroker struct {
	URL string `json:"url"`
	Key string `json:"key"`
}

// Input is a file the program reads at /input/<name>. Either a data
// provider uploads it (Provider), or the node fetches it from
// content-addressed storage (From) — public data every party agreed on.
type Input struct {
	Name string `json:"name"`
	// Provider is the principal that uploads the input; empty when From
	// is set.
	Provider string `json:"provider,omitempty"`
	// SHA256 pins the input's bytes (64 lowercase hex digits): an upload
	// or a fetched blob with another hash is refused. Required with From.
	SHA256 string `json:"sha256,omitempty"`
	// From names where the node fetches the input instead of an upload.
	From *Source `json:"from,omitempty"`
}

// Source is where a stored input is fetched: the blob's digest and the
// stores that may hold a copy, tried in order (docs/storage.md).
type Source struct {
	Digest string `json:"digest"`
	// Directory says the digest names a directory manifest (files, each
	// by name, digest and size): the program reads its files at
	// /input/<name>/<file>. The input's sha256 pins the manifest.
	Directory bool     `json:"directory,omitempty"`
	Stores    []string `json:"stores"`
}

// Output is a file the program writes at /output/<name>.
type Output struct {
	Name    string   `json:"name"`
	Readers []string `json:"readers"`
}

// HostCall is one call to its node the program may make while it runs,
// by name ("cloister.sha256/v1"). A node that does not offer it refuses
// the policy.
type HostCall struct {
	Name string `json:"name"`
}

// Isolate is one isolate class the parties accept, with what its evidence
// must show.
type Isolate struct {
	Class string `json:"class"`
	// PlatformKeys pins the keys that may sign evidence: for "software"
	// the nodes' platform keys ("ed25519:…"), for "tpm" attestation keys
	// (PEM PUBLIC KEY blocks or "ed25519:…").
	PlatformKeys []string `json:"platform_keys,omitempty"`
	// Roots adds PEM root certificates to the class's built-in ones (a
	// private TPM EK CA, a PCCS); they never replace the built-ins.
	Roots []string `json:"roots,omitempty"`
	// Measurements is the allow-list of launch measurements (hex).
	Measurements []string `json:"measurements,omitempty"`
	// MinSVN is the floor per security-version component as the class's
	// verifier names them ("bootloader", "tee", "snp", "microcode", …).
	MinSVN map[string]uint64 `json:"min_svn,omitempty"`
	// AcceptTCBStatus lists acceptable TCB statuses; empty means anything
	// but "Revoked".
	AcceptTCBStatus []string `json:"accept_tcb_status,omitempty"`
	// AllowDebug accepts debug-enabled isolates, whose memory the host can
	// read. Only for testing.
	AllowDebug bool `json:"allow_debug,omitempty"`
	// MaxVMPL ("sev-snp" only) is the highest VM privilege level a report
	// may be asked for at; absent means 0: the report must come from the
	// most privileged software in the VM, with nothing under it (a
	// paravisor, an SVSM) that could watch or alter the isolate.
	MaxVMPL *uint64 `json:"max_vmpl,omitempty"`
	// PCRs ("tpm" only) are the accepted sets of PCR values, index (0–22,
	// decimal) → SHA-256 bank value (64 lowercase hex digits); a quote must
	// match every value of one set. Pinning PCRs 0–7 judges the boot chain
	// (firmware, its configuration, the boot loader); without them a tpm
	// quote proves only which TPM signed it.
	PCRs []map[string]string `json:"pcrs,omitempty"`
}

// Limits bound one execution. Empty fields take the defaults below.
type Limits struct {
	Memory    string `json:"memory,omitempty"`     // e.g. "256MiB"
	Timeout   string `json:"timeout,omitempty"`    // Go duration, e.g. "30s"
	MaxOutput string `json:"max_output,omitempty"` // total output bytes, e.g. "16MiB"
}

// Defaults for absent limits.
const (
	DefaultMemory    = 256 << 20
	DefaultTimeout   = 30 * time.Second
	DefaultMaxOutput = 16 << 20
)

// Upper bounds for limits: wasm32 addresses 4 GiB; a session holding an
// isolate longer than a day is a mistake, not a workload.
const (
	MaxMemory  = 4 << 30
	MaxTimeout = 24 * time.Hour
	MaxOutput  = 1 << 30
)

// MemoryBytes returns the memory limit in bytes.
func (l Limits) MemoryBytes() int64 { return sizeOr(l.Memory, DefaultMemory) }

// MaxOutputBytes returns the output size limit in bytes.
func (l Limits) MaxOutputBytes() int64 { return sizeOr(l.MaxOutput, DefaultMaxOutput) }

// TimeoutDuration returns the wall-clock limit.
func (l Limits) TimeoutDuration() time.Duration {
	if l.Timeout == "" {
		return DefaultTimeout
	}
	d, err := time.ParseDuration(l.Timeout)
	if err != nil {
		return DefaultTimeout // Validate refuses such policies
	}
	return d
}

func sizeOr(s string, def int64) int64 {
	if s == "" {
		return def
	}
	n, err := bytesize.Parse(s)
	if err != nil {
		return def // Validate refuses such policies
	}
	return n
}

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	defer f.Close()
	data := make([]byte, 0, 4096)
	buf := make([]byte, 32<<10)
	for {
		n, rerr := f.Read(buf)
		data = append(data, buf[:n]...)
		if len(data) > MaxFileSize {
			return nil, fmt.Errorf("policy %s: %w: larger than %d bytes", path, ErrSyntax, MaxFileSize)
		}
		if rerr != nil {
			break
		}
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("policy %s: %w", path, err)
	}
	return p, nil
}

// Canonical returns the RFC 8785 canonical form of the parsed document. For
// a Policy built in code rather than parsed, it is the canonical form of its
// encoding/json serialization.
func (p *Policy) Canonical() []byte {
	if p.canonical != nil {
		return slices.Clone(p.canonical)
	}
	// Serialize so that the result parses back: optional fields that are
	// zero are omitted (tags), and a nil role list is written as [].
	q := *p
	q.Principals = slices.Clone(p.Principals)
	for i := range q.Principals {
		if q.Principals[i].Roles == nil {
			q.Principals[i].Roles = []Role{}
		}
	}
	data, err := json.Marshal(&q)
	if err != nil {
		panic("policy: marshalling a Policy cannot fail: " + err.Error())
	}
	c, err := jcs.Canonicalize(data)
	if err != nil {
		panic("policy: encoding/json produced JSON jcs refuses: " + err.Error())
	}
	return c
}

// Hash returns SHA-256 of Canonical(): the value every attestation binds.
func (p *Policy) Hash() [32]byte { return sha256.Sum256(p.Canonical()) }

// HashHex returns Hash in lowercase hex.
func (p *Policy) HashHex() string {
	h := p.Hash()
	return hex.EncodeToString(h[:])
}

// Expired reports whether the policy no longer allows anything at now: it
// has expired at its Expires instant.
func (p *Policy) Expired(now time.Time) bool { return !now.Before(p.Expires) }

// ReplicaCount returns Replicas, or 1 when unset.
func (p *Policy) ReplicaCount() int { return max(1, p.Replicas) }

// Principal returns the principal with the given id.
func (p *Policy) Principal(id string) (*Principal, bool) {
	for i := range p.Principals {
		if p.Principals[i].ID == id {
			return &p.Principals[i], true
		}
	}
	return nil, false
}

// PrincipalBySigningKey returns the principal whose signing key is pub.
// Keys have one spelling (keys.ParseSigningKey accepts only the canonical
// one), so comparing the text is comparing the keys, without decoding each.
func (p *Policy) PrincipalBySigningKey(pub ed25519.PublicKey) (*Principal, bool) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, false
	}
	want := keys.FormatSigningKey(pub)
	for i := range p.Principals {
		if p.Principals[i].SigningKey == want {
			return &p.Principals[i], true
		}
	}
	return nil, false
}

// Has reports whether the principal holds role r.
func (pr *Principal) Has(r Role) bool { return slices.Contains(pr.Roles, r) }

// PublicSigningKey returns the parsed signing key.
func (pr *Principal) PublicSigningKey() (ed25519.PublicKey, error) {
	return keys.ParseSigningKey(pr.SigningKey)
}

// Program returns the program named name.
func (p *Policy) Program(name string) (*Program, bool) {
	for i := range p.Programs {
		if p.Programs[i].Name == name {
			return &p.Programs[i], true
		}
	}
	return nil, false
}

// Input returns the input named name.
func (p *Policy) Input(name string) (*Input, bool) {
	for i := range p.Inputs {
		if p.Inputs[i].Name == name {
			return &p.Inputs[i], true
		}
	}
	return nil, false
}

// Output returns the output named name.
func (p *Policy) Output(name string) (*Output, bool) {
	for i := range p.Outputs {
		if p.Outputs[i].Name == name {
			return &p.Outputs[i], true
		}
	}
	return nil, false
}

// ProgramProvider returns the id of the principal allowed to upload program
// name, and false if the policy has no such program.
func (p *Policy) ProgramProvider(name string) (string, bool) {
	pr, ok := p.Program(name)
	if !ok {
		return "", false
	}
	return pr.Provider, true
}

// InputProvider returns the id of the principal allowed to upload input
// name, and false if the policy has no such input or the node fetches it
// (Input.From).
func (p *Policy) InputProvider(name string) (string, bool) {
	in, ok := p.Input(name)
	if !ok || in.From != nil {
		return "", false
	}
	return in.Provider, true
}

// BrokerURL returns the URL of the broker whose signing key is key, and
// false if the program pins no such broker.
func (sp *SealedProgram) BrokerURL(key string) (string, bool) {
	for _, b := range sp.Brokers {
		if b.Key == key {
			return b.URL, true
		}
	}
	return "", false
}

// Stored reports whether the node fetches this input rather than a
// provider uploading it.
func (in *Input) Stored() bool { return in.From != nil }

// PinnedSHA256 returns the input's pinned hash, decoded, and whether it
// has one.
func (in *Input) PinnedSHA256() ([32]byte, bool) {
	var h [32]byte
	b, err := hex.DecodeString(in.SHA256)
	if err != nil || len(b) != 32 {
		return h, false
	}
	copy(h[:], b)
	return h, true
}

// OutputReaders returns the ids of the principals allowed to read output
// name, and false if the policy has no such output.
func (p *Policy) OutputReaders(name string) ([]string, bool) {
	o, ok := p.Output(name)
	if !ok {
		return nil, false
	}
	return slices.Clone(o.Readers), true
}

// MayRead reports whether principal id may read output name.
func (p *Policy) MayRead(id, name string) bool {
	o, ok := p.Output(name)
	return ok && slices.Contains(o.Readers, id)
}

// ProgramSHA256 returns the pinned hash of program name, decoded.
func (p *Policy) ProgramSHA256(name string) ([32]byte, bool) {
	var h [32]byte
	pr, ok := p.Program(name)
	if !ok {
		return h, false
	}
	b, err := hex.DecodeString(pr.SHA256)
	if err != nil || len(b) != 32 {
		return h, false
	}
	copy(h[:], b)
	return h, true
}

// Isolate returns the isolate entry for class.
func (p *Policy) Isolate(class string) (*Isolate, bool) {
	for i := range p.Isolates {
		if p.Isolates[i].Class == class {
			return &p.Isolates[i], true
		}
	}
	return nil, false
}
