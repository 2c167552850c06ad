package policy

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloisterhq/cloister/blob/addr"
	"github.com/cloisterhq/cloister/internal/bytesize"
	"github.com/cloisterhq/cloister/internal/callname"
	"github.com/cloisterhq/cloister/keys"
)

// Classes lists the isolate classes a policy may name.
var Classes = []string{"software", "tpm", "sev-snp", "tdx", "sgx", "nitro"}

// measurementSizes are the launch measurement sizes of each class, in bytes:
// software runtime hash (SHA-256), TPM PCR digest (SHA-256 or SHA-384 bank),
// SNP MEASUREMENT, TDX MRTD, SGX MRENCLAVE, Nitro PCR0 (SHA-384).
var measurementSizes = map[string][]int{
	"software": {32},
	"tpm":      {32, 48},
	"sev-snp":  {48},
	"tdx":      {48},
	"sgx":      {32},
	"nitro":    {48},
}

// Bounds on list sizes and strings, so that a policy stays a readable
// contract and a hostile one costs bounded work.
const (
	MaxPrincipals = 256
	MaxEntries    = 1024 // programs, inputs, outputs each
	MaxReplicas   = 64
	maxIDLen      = 64
	maxNameLen    = 255
)

// Engines are the values of engine: the WebAssembly engines a node may
// run programs with (package isolate's EngineWazero and EngineWasmtime).
var Engines = []string{"wazero", "wasmtime"}

// Validate checks every rule of docs/policy.md that does not depend on the
// clock, and returns a *ValidationError listing all problems, or nil.
// Expiry is checked by the caller with Expired, at the time that matters.
func (p *Policy) Validate() error {
	var ps problems
	if p.Version != Version {
		ps.add("version", "must be %d, got %d", Version, p.Version)
	}
	if p.Name == "" {
		ps.add("name", "must not be empty")
	} else if msg := checkText(p.Name, 128); msg != "" {
		ps.add("name", "%s", msg)
	}
	if p.Expires.IsZero() {
		ps.add("expires", "required: an RFC 3339 time after which the policy is refused")
	}
	if p.Replicas < 0 {
		ps.add("replicas", "must be at least 1, got %d", p.Replicas)
	} else if p.Replicas > MaxReplicas {
		ps.add("replicas", "at most %d, got %d", MaxReplicas, p.Replicas)
	}
	p.validateReplicas(&ps)
	if p.Engine != "" && !slices.Contains(Engines, p.Engine) {
		ps.add("engine", "%q is not an engine: one of %s, or absent for the node's choice", p.Engine, strings.Join(Engines, ", "))
	}

	byID := p.validatePrincipals(&ps)
	p.validatePrograms(&ps, byID)
	p.validateInputs(&ps, byID)
	p.validateOutputs(&ps, byID)
	p.validateIsolates(&ps)
	p.validateHostCalls(&ps)
	p.Limits.validate(&ps)
	return ps.err()
}

// ReplicaClassesDistinct is the one value of replica_classes: every
// replica in an isolate of another class.
const ReplicaClassesDistinct = "distinct"

// validateReplicas: replicated runs must be bit-exact (deterministic),
// may not reach outside the isolate (host calls would be made once per
// replica), and distinct classes need as many accepted classes as
// replicas.
func (p *Policy) validateReplicas(ps *problems) {
	switch p.ReplicaClasses {
	case "":
	case ReplicaClassesDistinct:
		if p.Replicas < 2 {
			ps.add("replica_classes", "applies to replicated runs only (replicas of at least 2)")
		} else if len(p.Isolates) < p.Replicas {
			ps.add("replica_classes", "%q needs an isolate class per replica: %d replicas, %d classes accepted", ReplicaClassesDistinct, p.Replicas, len(p.Isolates))
		}
	default:
		ps.add("replica_classes", "must be %q or absent, got %q", ReplicaClassesDistinct, p.ReplicaClasses)
	}
	if p.Replicas < 2 {
		return
	}
	if !p.Deterministic {
		ps.add("replicas", "%d replicas must agree bit for bit: set \"deterministic\": true", p.Replicas)
	}
	if len(p.HostCalls) > 0 {
		ps.add("replicas", "a replicated run may not make host calls (each replica would make them again)")
	}
}

// MaxHostCalls bounds the host calls a policy may allow.
const MaxHostCalls = 64

func (p *Policy) validateHostCalls(ps *problems) {
	if len(p.HostCalls) > MaxHostCalls {
		ps.add("host_calls", "at most %d, got %d", MaxHostCalls, len(p.HostCalls))
	}
	seen := map[string]bool{}
	for i, c := range p.HostCalls {
		field := fmt.Sprintf("host_calls[%d].name", i)
		if err := callname.Validate(c.Name); err != nil {
			ps.add(field, "%v", err)
		}
		if seen[c.Name] {
			ps.add(field, "%q is listed twice", c.Name)
		}
		seen[c.Name] = true
	}
}

func (p *Policy) validatePrincipals(ps *problems) map[string]*Principal {
	byID := map[string]*Principal{}
	if len(p.Principals) == 0 {
		ps.add("principals", "at least one principal is required")
	}
	if len(p.Principals) > MaxPrincipals {
		ps.add("principals", "at most %d principals, got %d", MaxPrincipals, len(p.Principals))
	}
	signers := map[string]string{}
	for i := range p.Principals {
		pr := &p.Principals[i]
		f := fmt.Sprintf("principals[%d]", i)
		if msg := checkID(pr.ID); msg != "" {
			ps.add(f+".id", "%s", msg)
		} else if _, dup := byID[pr.ID]; dup {
			ps.add(f+".id", "%q is used by another principal; ids must be unique", pr.ID)
		} else {
			byID[pr.ID] = pr
		}
		if pk, err := keys.ParseSigningKey(pr.SigningKey); errors.Is(err, keys.ErrWeakKey) {
			ps.add(f+".signing_key", "refused: %v", trimKeysErr(err))
		} else if err != nil {
			ps.add(f+".signing_key", "not an ed25519 key: %v", trimKeysErr(err))
		} else if other, dup := signers[string(pk)]; dup {
			ps.add(f+".signing_key", "same key as principal %q; each principal needs its own key", other)
		} else {
			signers[string(pk)] = pr.ID
		}
		if pr.SealingKey != "" {
			if _, err := keys.ParseSealingKey(pr.SealingKey); err != nil {
				ps.add(f+".sealing_key", "not an hpke key: %v", trimKeysErr(err))
			}
		}
		seen := map[Role]bool{}
		for j, r := range pr.Roles {
			rf := fmt.Sprintf("%s.roles[%d]", f, j)
			switch {
			case !slices.Contains(Roles, r):
				ps.add(rf, "unknown role %q (known: program-provider, data-provider, result-reader)", r)
			case seen[r]:
				ps.add(rf, "role %q listed twice", r)
			}
			seen[r] = true
		}
		if pr.Has(RoleResultReader) && pr.SealingKey == "" {
			ps.add(f+".sealing_key", "required for a result-reader: outputs are sealed to it")
		}
	}
	return byID
}

// provider checks that id names a principal holding role.
func provider(ps *problems, field, id string, role Role, byID map[string]*Principal) {
	if id == "" {
		ps.add(field, "must name a principal")
		return
	}
	pr, ok := byID[id]
	if !ok {
		ps.add(field, "no principal has id %q", id)
		return
	}
	if !pr.Has(role) {
		ps.add(field, "principal %q lacks the %s role", id, role)
	}
}

func (p *Policy) validatePrograms(ps *problems, byID map[string]*Principal) {
	if len(p.Programs) == 0 {
		ps.add("programs", "at least one program is required")
	}
	if len(p.Programs) > MaxEntries {
		ps.add("programs", "at most %d entries, got %d", MaxEntries, len(p.Programs))
	}
	names := map[string]bool{}
	for i, pg := range p.Programs {
		f := fmt.Sprintf("programs[%d]", i)
		checkFileName(ps, f+".name", pg.Name, names)
		if !isLowerHex(pg.SHA256, 32) {
			ps.add(f+".sha256", "must be 64 lowercase hex digits (the SHA-256 of the module), got %q", truncate(pg.SHA256))
		}
		if pg.Sealed == nil {
			provider(ps, f+".provider", pg.Provider, RoleProgramProvider, byID)
			continue
		}
		if pg.Provider != "" {
			ps.add(f+".provider", "a program is either uploaded by a provider or sealed (fetched by the node, its key from brokers), not both")
		}
		validateSealed(ps, f+".sealed", pg.Sealed)
	}
}

// MaxBrokers bounds the brokers a sealed program names.
const MaxBrokers = 16

func validateSealed(ps *problems, f string, sp *SealedProgram) {
	validateSource(ps, f, &Source{Digest: sp.Digest, Stores: sp.Stores})
	if _, err := keys.ParseSigningKey(sp.Owner); err != nil {
		ps.add(f+".owner", "%v", err)
	}
	if len(sp.Brokers) == 0 || len(sp.Brokers) > MaxBrokers {
		ps.add(f+".brokers", "1 to %d brokers, got %d", MaxBrokers, len(sp.Brokers))
	}
	if sp.Threshold < 1 || sp.Threshold > len(sp.Brokers) {
		ps.add(f+".threshold", "must be 1 to the number of brokers (%d), got %d", len(sp.Brokers), sp.Threshold)
	}
	seen := map[string]bool{}
	for j, b := range sp.Brokers {
		bf := fmt.Sprintf("%s.brokers[%d]", f, j)
		u, err := url.Parse(b.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			ps.add(bf+".url", "must be an http or https URL with a host and no query, got %q", truncate(b.URL))
		}
		if _, err := keys.ParseSigningKey(b.Key); err != nil {
			ps.add(bf+".key", "%v", err)
		}
		if seen[b.Key] {
			ps.add(bf+".key", "%q listed twice", truncate(b.Key))
		}
		seen[b.Key] = true
	}
}

func (p *Policy) validateInputs(ps *problems, byID map[string]*Principal) {
	if len(p.Inputs) > MaxEntries {
		ps.add("inputs", "at most %d entries, got %d", MaxEntries, len(p.Inputs))
	}
	names := map[string]bool{}
	for i, in := range p.Inputs {
		f := fmt.Sprintf("inputs[%d]", i)
		checkFileName(ps, f+".name", in.Name, names)
		if in.SHA256 != "" && !isLowerHex(in.SHA256, 32) {
			ps.add(f+".sha256", "must be 64 lowercase hex digits (the SHA-256 of the input), got %q", truncate(in.SHA256))
		}
		if in.From == nil {
			provider(ps, f+".provider", in.Provider, RoleDataProvider, byID)
			continue
		}
		if in.Provider != "" {
			ps.add(f+".provider", "an input is either uploaded by a provider or fetched from stores (from), not both")
		}
		if in.SHA256 == "" {
			ps.add(f+".sha256", "required with from: the node checks the fetched bytes against it")
		}
		validateSource(ps, f+".from", in.From)
		if isLowerHex(in.SHA256, 32) && addr.ParseDigest(in.From.Digest) == nil && in.From.Digest != "sha256:"+in.SHA256 {
			ps.add(f+".from.digest", "a stored input is public data: its digest is the SHA-256 of its bytes and must equal sha256:%s", in.SHA256)
		}
	}
}

// MaxStores bounds the stores one source lists.
const MaxStores = 16

func validateSource(ps *problems, f string, src *Source) {
	if err := addr.ParseDigest(src.Digest); err != nil {
		ps.add(f+".digest", "%v", err)
	}
	if len(src.Stores) == 0 {
		ps.add(f+".stores", "at least one store URL is required")
	}
	if len(src.Stores) > MaxStores {
		ps.add(f+".stores", "at most %d stores, got %d", MaxStores, len(src.Stores))
	}
	seen := map[string]bool{}
	for j, s := range src.Stores {
		sf := fmt.Sprintf("%s.stores[%d]", f, j)
		u, err := addr.ParseStoreURL(s)
		switch {
		case err != nil:
			ps.add(sf, "%v", err)
		case u.String() != s:
			ps.add(sf, "write it as %q (one spelling per store, so that the policy hash does not depend on it)", u.String())
		case seen[s]:
			ps.add(sf, "%q listed twice", s)
		}
		seen[s] = true
	}
}

func (p *Policy) validateOutputs(ps *problems, byID map[string]*Principal) {
	if len(p.Outputs) == 0 {
		ps.add("outputs", "at least one output is required")
	}
	if len(p.Outputs) > MaxEntries {
		ps.add("outputs", "at most %d entries, got %d", MaxEntries, len(p.Outputs))
	}
	names := map[string]bool{}
	for i, o := range p.Outputs {
		f := fmt.Sprintf("outputs[%d]", i)
		checkFileName(ps, f+".name", o.Name, names)
		if len(o.Readers) == 0 {
			ps.add(f+".readers", "at least one reader is required")
		}
		seen := map[string]bool{}
		for j, r := range o.Readers {
			rf := fmt.Sprintf("%s.readers[%d]", f, j)
			if seen[r] {
				ps.add(rf, "%q listed twice", r)
				continue
			}
			seen[r] = true
			provider(ps, rf, r, RoleResultReader, byID)
			if pr, ok := byID[r]; ok && pr.Has(RoleResultReader) && pr.SealingKey == "" {
				ps.add(rf, "principal %q has no sealing_key to seal the output to", r)
			}
		}
	}
}

func (p *Policy) validateIsolates(ps *problems) {
	if len(p.Isolates) == 0 {
		ps.add("isolates", "at least one isolate class is required")
	}
	classes := map[string]bool{}
	for i, iso := range p.Isolates {
		f := fmt.Sprintf("isolates[%d]", i)
		sizes, known := measurementSizes[iso.Class]
		switch {
		case !known:
			ps.add(f+".class", "unknown class %q (known: %s)", iso.Class, strings.Join(Classes, ", "))
		case classes[iso.Class]:
			ps.add(f+".class", "class %q listed twice; merge the entries", iso.Class)
		}
		classes[iso.Class] = true
		hardware := known && iso.Class != "software"
		if iso.Class == "software" && len(iso.PlatformKeys) == 0 {
			ps.add(f+".platform_keys", "the software class needs at least one platform key: software evidence is only as good as the node key that signs it")
		}
		if iso.Class == "tpm" && len(iso.PlatformKeys) == 0 && len(iso.Roots) == 0 {
			ps.add(f+".platform_keys", "the tpm class needs attestation keys (platform_keys) or the roots that certify them (roots)")
		}
		if hardware && len(iso.Measurements) == 0 {
			ps.add(f+".measurements", "class %s needs at least one allowed measurement", iso.Class)
		}
		if hardware && iso.Class != "tpm" && len(iso.PlatformKeys) > 0 {
			ps.add(f+".platform_keys", "class %s evidence is signed by the hardware vendor's chain, not pinned keys; use roots for extra trust anchors", iso.Class)
		}
		if iso.Class == "software" && len(iso.Roots) > 0 {
			ps.add(f+".roots", "the software class has no certificate chain; list platform_keys instead")
		}
		pkeys := map[string]bool{}
		for j, k := range iso.PlatformKeys {
			kf := fmt.Sprintf("%s.platform_keys[%d]", f, j)
			if pkeys[k] {
				ps.add(kf, "listed twice")
			}
			pkeys[k] = true
			if _, err := parsePlatformKey(iso.Class, k); err != nil {
				ps.add(kf, "%v", err)
			}
		}
		for j, r := range iso.Roots {
			if _, err := parseRoot(r); err != nil {
				ps.add(fmt.Sprintf("%s.roots[%d]", f, j), "%v", err)
			}
		}
		ms := map[string]bool{}
		for j, m := range iso.Measurements {
			mf := fmt.Sprintf("%s.measurements[%d]", f, j)
			if ms[m] {
				ps.add(mf, "listed twice")
			}
			ms[m] = true
			if !known {
				continue
			}
			ok := false
			for _, n := range sizes {
				ok = ok || isLowerHex(m, n)
			}
			if !ok {
				ps.add(mf, "a %s measurement is %s lowercase hex digits, got %q", iso.Class, hexLens(sizes), truncate(m))
			}
		}
		for comp := range iso.MinSVN {
			if comp == "" || checkText(comp, 64) != "" {
				ps.add(f+".min_svn", "component names must be short non-empty text, got %q", truncate(comp))
			}
		}
		if iso.MaxVMPL != nil {
			switch {
			case iso.Class != "sev-snp":
				ps.add(f+".max_vmpl", "only the sev-snp class has VM privilege levels")
			case *iso.MaxVMPL > 3:
				ps.add(f+".max_vmpl", "SEV-SNP has VMPLs 0 to 3, got %d", *iso.MaxVMPL)
			}
		}
		if len(iso.PCRs) > 0 && iso.Class != "tpm" {
			ps.add(f+".pcrs", "only the tpm class has PCRs")
		}
		for j, set := range iso.PCRs {
			sf := fmt.Sprintf("%s.pcrs[%d]", f, j)
			if len(set) == 0 {
				ps.add(sf, "an empty set would accept any quote; list the PCRs to pin")
			}
			for k, v := range set {
				if _, err := pcrIndex(k); err != nil {
					ps.add(sf+"."+k, "%v", err)
				}
				if !isLowerHex(v, 32) {
					ps.add(sf+"."+k, "a SHA-256 PCR value is 64 lowercase hex digits, got %q", truncate(v))
				}
			}
		}
		st := map[string]bool{}
		for j, s := range iso.AcceptTCBStatus {
			sf := fmt.Sprintf("%s.accept_tcb_status[%d]", f, j)
			if s == "" || checkText(s, 64) != "" {
				ps.add(sf, "must be a TCB status name such as UpToDate")
			} else if st[s] {
				ps.add(sf, "%q listed twice", s)
			}
			st[s] = true
		}
	}
}

// pcrIndex reads a PCR index of a pcrs set: 0 to 22 in decimal. PCR 23
// holds the runtime measurement, which "measurements" judges.
func pcrIndex(k string) (int, error) {
	n, err := strconv.Atoi(k)
	if err != nil || strconv.Itoa(n) != k || n < 0 || n > 22 {
		return 0, fmt.Errorf("%q is not a PCR index from 0 to 22 (PCR 23, the runtime, is judged by measurements)", truncate(k))
	}
	return n, nil
}

func hexLens(sizes []int) string {
	var s []string
	for _, n := range sizes {
		s = append(s, fmt.Sprint(2*n))
	}
	return strings.Join(s, " or ")
}

func (l Limits) validate(ps *problems) {
	if l.Memory != "" {
		n, err := bytesize.Parse(l.Memory)
		switch {
		case err != nil:
			ps.add("limits.memory", "%v", err)
		case n < 64<<10:
			ps.add("limits.memory", "%s is less than one 64 KiB WebAssembly page", l.Memory)
		case n > MaxMemory:
			ps.add("limits.memory", "%s exceeds the 4 GiB a 32-bit WebAssembly module can address", l.Memory)
		}
	}
	if l.Timeout != "" {
		d, err := time.ParseDuration(l.Timeout)
		switch {
		case err != nil:
			ps.add("limits.timeout", "%q is not a duration such as 30s or 5m", l.Timeout)
		case d <= 0:
			ps.add("limits.timeout", "must be positive")
		case d > MaxTimeout:
			ps.add("limits.timeout", "%s exceeds the maximum of %s", l.Timeout, MaxTimeout)
		}
	}
	if l.MaxOutput != "" {
		n, err := bytesize.Parse(l.MaxOutput)
		switch {
		case err != nil:
			ps.add("limits.max_output", "%v", err)
		case n <= 0:
			ps.add("limits.max_output", "must be positive")
		case n > MaxOutput:
			ps.add("limits.max_output", "%s exceeds the maximum of 1GiB", l.MaxOutput)
		}
	}
}

// checkID returns why id is not a principal id, or "". Ids appear in
// messages, logs and ledger entries, so they are kept to a plain alphabet.
func checkID(id string) string {
	if id == "" {
		return "must not be empty"
	}
	if len(id) > maxIDLen {
		return fmt.Sprintf("at most %d characters", maxIDLen)
	}
	for i, c := range id {
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if i == 0 && !alnum {
			return fmt.Sprintf("%q must start with a letter or digit", id)
		}
		if !alnum && !strings.ContainsRune("._-@", c) {
			return fmt.Sprintf("%q may contain only letters, digits and . _ - @", id)
		}
	}
	return ""
}

// checkText refuses control characters and overlong text.
func checkText(s string, maxLen int) string {
	if utf8.RuneCountInString(s) > maxLen {
		return fmt.Sprintf("at most %d characters", maxLen)
	}
	for _, c := range s {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			return fmt.Sprintf("contains control character %U", c)
		}
	}
	return ""
}

// checkFileName enforces that program, input and output names are plain
// file names: the guest sees them as /input/<name> and /output/<name>, and
// the node stores them under its data directory.
func checkFileName(ps *problems, field, name string, seen map[string]bool) {
	switch {
	case name == "":
		ps.add(field, "must not be empty")
	case name == "." || name == "..":
		ps.add(field, "%q is not a file name", name)
	case strings.ContainsAny(name, "/\\"):
		ps.add(field, "%q must be a plain file name without / or \\", name)
	case len(name) > maxNameLen:
		ps.add(field, "at most %d bytes", maxNameLen)
	case checkText(name, maxNameLen) != "":
		ps.add(field, "%q %s", name, checkText(name, maxNameLen))
	case seen[name]:
		ps.add(field, "%q is used twice", name)
	}
	seen[name] = true
}

func isLowerHex(s string, n int) bool {
	if len(s) != 2*n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func truncate(s string) string {
	if len(s) > 24 {
		return s[:24] + "…"
	}
	return s
}

// trimKeysErr drops the package prefix of key parsing errors, which the
// field path already explains.
func trimKeysErr(err error) string {
	msg := strings.TrimPrefix(err.Error(), keys.ErrFormat.Error()+": ")
	return strings.TrimPrefix(msg, keys.ErrWeakKey.Error()+": ")
}
