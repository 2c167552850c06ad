package broker

import (
	"context"
	"crypto/rand"
	"fmt"

	"github.com/cloisterhq/cloister/attest"
	"github.com/cloisterhq/cloister/internal/probe"
)

// ready is the broker's readiness (package probe serves it on /readyz): it
// could release a key — its attester produces evidence and its ledger
// answers and is not catching up.
func (b *Broker) ready(ctx context.Context) []string {
	var reasons []string
	var rd [attest.ReportDataSize]byte
	rand.Read(rd[:])
	if ev, err := b.att.Attest(ctx, rd); err != nil || ev == nil || len(ev.Data) == 0 {
		reasons = append(reasons, fmt.Sprintf("attestation: the broker's attester produces no evidence: %v", err))
	}
	switch l := b.opts.Ledger.(type) {
	case nil:
		reasons = append(reasons, "ledger: none configured (--ledger): every release is refused")
	case probe.LedgerStatus:
		reasons = append(reasons, probe.Ledger(ctx, l)...)
	}
	return reasons
}
