package node

import (
	"crypto/ed25519"
	"crypto/hpke"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/policy"
)

// Small accessors over package policy, in one place so that the rules in
// session.go read as rules.

func policyName(p *policy.Policy) string { return p.Name }

func principalOf(p *policy.Policy, id string) *policy.Principal {
	pr, ok := p.Principal(id)
	if !ok {
		return nil
	}
	return pr
}

func principalSigningKey(pr *policy.Principal) (ed25519.PublicKey, error) {
	return pr.PublicSigningKey()
}

func principalSealingKey(pr *policy.Principal) (hpke.PublicKey, error) {
	if pr.SealingKey == "" {
		return nil, fmt.Errorf("principal %q has no sealing_key", pr.ID)
	}
	return keys.ParseSealingKey(pr.SealingKey)
}

func findProgram(p *policy.Policy, name string) *policy.Program {
	pr, _ := p.Program(name)
	return pr
}

func findInput(p *policy.Policy, name string) *policy.Input {
	in, _ := p.Input(name)
	return in
}

func findOutput(p *policy.Policy, name string) *policy.Output {
	o, _ := p.Output(name)
	return o
}

func programHash(p *policy.Policy, name string) ([32]byte, error) {
	h, ok := p.ProgramSHA256(name)
	if !ok {
		return h, fmt.Errorf("policy program %q has no valid sha256", name)
	}
	return h, nil
}

func hasRole(pr *policy.Principal, role policy.Role) bool { return pr.Has(role) }

func policyLimits(p *policy.Policy) (memory uint64, timeout time.Duration, maxOutput int64, err error) {
	m := p.Limits.MemoryBytes()
	if m <= 0 {
		return 0, 0, 0, fmt.Errorf("policy memory limit %d is not positive", m)
	}
	return uint64(m), p.Limits.TimeoutDuration(), p.Limits.MaxOutputBytes(), nil
}
