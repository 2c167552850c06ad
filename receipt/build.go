package receipt

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"

	"github.com/cloisterhq/cloister/attest/ratls"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

// Material is what a node holds of a session besides the ledger: public,
// never a secret (node.ReceiptMaterial).
type Material struct {
	Session       string
	Policy        []byte // canonical form
	PolicyHash    string
	Class         string
	PlatformKey   string
	Certificate   []byte // DER RA-TLS certificate of the session TLS key
	HPKEPublicKey []byte
}

// ErrNotCheckpointed reports that none of a session's entries is covered
// by a cosigned checkpoint yet (checkpoints trail commits by a block or
// two).
var ErrNotCheckpointed = errors.New("no entry of the session is in a checkpoint yet")

// Build assembles the receipt of a session from m and the entries at
// indices (the node's registration and the session's steps) read from the
// ledger lc, with inclusion proofs to the latest checkpoint. Entries not
// yet covered by that checkpoint are left out and returned as pending.
// With trusted (a checkpoint the caller verified before), the receipt also
// carries the consistency proof between it and the receipt's checkpoint.
func Build(ctx context.Context, m *Material, lc *lclient.Client, indices []uint64, trusted *uint64) (*Receipt, []uint64, error) {
	r := &Receipt{Format: Format, Session: m.Session, Node: Node{PlatformKey: m.PlatformKey, IsolateClass: m.Class},
		Policy: string(m.Policy), PolicyHash: m.PolicyHash, SessionCertificate: m.Certificate, HPKEPublicKey: m.HPKEPublicKey}
	_, ev, err := certificateEvidence(m.Certificate)
	if err != nil {
		return nil, nil, fmt.Errorf("receipt: %w", err)
	}
	r.Evidence = *ev
	vs, err := lc.Validators(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("receipt: ledger validators: %w", err)
	}
	cp, err := lc.Checkpoint(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("receipt: ledger checkpoint: %w", err)
	}
	r.Ledger = Ledger{Origin: vs.Origin, ValidatorSet: vs, Checkpoint: string(cp.Note)}
	indices = slices.Clone(indices)
	slices.Sort(indices)
	indices = slices.Compact(indices)
	var pending []uint64
	for _, i := range indices {
		if i >= cp.Size {
			pending = append(pending, i)
			continue
		}
		e, err := lc.Get(ctx, i)
		if err != nil {
			return nil, nil, fmt.Errorf("receipt: ledger entry %d: %w", i, err)
		}
		p, err := lc.InclusionProof(ctx, i, cp.Size)
		if err != nil {
			return nil, nil, fmt.Errorf("receipt: inclusion proof of entry %d: %w", i, err)
		}
		re := Entry{Index: i, Tx: string(e.Tx), Proof: make([][]byte, 0, len(p.Hashes))}
		for _, h := range p.Hashes {
			re.Proof = append(re.Proof, h[:])
		}
		r.Ledger.Entries = append(r.Ledger.Entries, re)
	}
	if len(r.Ledger.Entries) == 0 {
		return nil, pending, ErrNotCheckpointed
	}
	if trusted != nil && *trusted != cp.Size && *trusted > 0 {
		from, to := min(*trusted, cp.Size), max(*trusted, cp.Size)
		p, err := lc.ConsistencyProof(ctx, from, to)
		if err != nil {
			return nil, nil, fmt.Errorf("receipt: consistency proof from %d to %d: %w", from, to, err)
		}
		c := &Consistency{Trusted: *trusted, Hashes: make([][]byte, 0, len(p.Hashes))}
		for _, h := range p.Hashes {
			c.Hashes = append(c.Hashes, h[:])
		}
		r.Ledger.Consistency = c
	}
	return r, pending, nil
}

// certificateEvidence parses an RA-TLS certificate and extracts its
// evidence.
func certificateEvidence(der []byte) (*x509.Certificate, *Evidence, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("session certificate: %w", err)
	}
	for _, e := range cert.Extensions {
		if e.Id.Equal(ratls.OIDEvidence) {
			ext, err := ratls.ParseExtension(e.Value)
			if err != nil {
				return nil, nil, fmt.Errorf("session certificate: %w", err)
			}
			return cert, &Evidence{Class: string(ext.Class), Data: ext.Evidence, Collateral: ext.Collateral}, nil
		}
	}
	return nil, nil, errors.New("the session certificate carries no evidence")
}
