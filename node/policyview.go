package node

import (
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/policy"
)

// policyView is a parsed policy with the principals' keys decoded once.
// Sessions share it read-only. Parsing a policy (canonical JSON, hash, an
// ML-KEM key expansion per sealing key) costs more CPU than the rest of a
// session's create; a node that runs one policy many times parses it once.
type policyView struct {
	pol     *policy.Policy
	hash    [32]byte
	signing map[string]ed25519.PublicKey // by principal id
	sealing map[string]hpke.PublicKey    // by principal id, for those with a sealing_key
}

func newPolicyView(doc []byte) (*policyView, error) {
	pol, err := policy.Parse(doc)
	if err != nil {
		return nil, err
	}
	v := &policyView{pol: pol, hash: pol.Hash(), signing: map[string]ed25519.PublicKey{}, sealing: map[string]hpke.PublicKey{}}
	for i := range pol.Principals {
		pr := &pol.Principals[i]
		// Parse validated both keys; an error here is a bug in policy.
		if v.signing[pr.ID], err = keys.ParseSigningKey(pr.SigningKey); err != nil {
			return nil, fmt.Errorf("principals[%d].signing_key: %w", i, err)
		}
		if pr.SealingKey != "" {
			if v.sealing[pr.ID], err = keys.ParseSealingKey(pr.SealingKey); err != nil {
				return nil, fmt.Errorf("principals[%d].sealing_key: %w", i, err)
			}
		}
	}
	return v, nil
}

// policyCache keeps the views of the policies seen last, by SHA-256 of the
// document's bytes (the same bytes always parse to the same policy).
type policyCache struct {
	mu    sync.Mutex
	views map[[32]byte]*policyView
	order [][32]byte
}

// policyCacheSize bounds the cache: a view is a few KiB.
const policyCacheSize = 64

func (c *policyCache) get(doc []byte) (*policyView, error) {
	key := sha256.Sum256(doc)
	c.mu.Lock()
	v := c.views[key]
	c.mu.Unlock()
	if v != nil {
		return v, nil
	}
	v, err := newPolicyView(doc)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.views == nil {
		c.views = map[[32]byte]*policyView{}
	}
	if _, ok := c.views[key]; !ok {
		if len(c.order) >= policyCacheSize {
			delete(c.views, c.order[0])
			c.order = c.order[1:]
		}
		c.views[key] = v
		c.order = append(c.order, key)
	}
	return v, nil
}

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

func (v *policyView) signingKey(pr *policy.Principal) (ed25519.PublicKey, error) {
	k, ok := v.signing[pr.ID]
	if !ok {
		return nil, fmt.Errorf("principal %q has no signing_key", pr.ID)
	}
	return k, nil
}

func (v *policyView) sealingKey(pr *policy.Principal) (hpke.PublicKey, error) {
	k, ok := v.sealing[pr.ID]
	if !ok {
		return nil, fmt.Errorf("principal %q has no sealing_key", pr.ID)
	}
	return k, nil
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
