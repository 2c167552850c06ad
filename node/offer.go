package node

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// OfferSpec is what a node offers on the ledger (rule version 4, decision
// 0110): its class and the digest of its evidence come from the node
// itself, the rest from its operator. The node publishes the offer when it
// starts and renews it (a heartbeat: the next offer replaces the last)
// every TTL/3 while it runs; a node that stops renewing drops out once
// the offer's TTL has passed since the block that took it. A draining
// node stops renewing (decision 0115).
type OfferSpec struct {
	Memory      uint64 // bytes offered
	Cores       uint64
	Concurrency uint64 // concurrent runs
	Price       string // per CPU-second, a decimal; "" for none
	Regions     []string
	TTL         time.Duration // 1 s to 10 min
}

// check refuses an offer the ledger would refuse for its form.
func (o *OfferSpec) check() error {
	if o.Memory == 0 || o.Cores == 0 || o.Concurrency == 0 {
		return errors.New("node: an offer needs memory, cores and concurrency of at least 1")
	}
	if o.TTL < time.Second || o.TTL > 600*time.Second {
		return fmt.Errorf("node: offer TTL %s: want 1s to 10m", o.TTL)
	}
	return nil
}

// offerBody is the body of an offer entry.
type offerBody struct {
	Classes        []string `json:"classes"`
	EvidenceDigest string   `json:"evidence_digest"`
	Memory         uint64   `json:"memory"`
	Cores          uint64   `json:"cores"`
	Concurrency    uint64   `json:"concurrency"`
	Price          string   `json:"price,omitempty"`
	Regions        []string `json:"regions,omitempty"`
	TTL            uint64   `json:"ttl"`
}

// offerLoop publishes the node's offer and renews it until the node stops
// or drains. A renewal that fails is logged and tried again at the next
// beat, which still comes before the last offer expires.
func (n *Node) offerLoop(body offerBody) {
	defer n.wg.Done()
	every := time.Duration(body.TTL) * time.Second / 3
	for {
		if !n.draining.Load() {
			if idx, err := n.publishOffer(body); err != nil {
				n.log.Warn("offer not published; trying again at the next heartbeat", "err", err, "every", every)
			} else {
				n.log.Debug("offer published", "index", idx)
			}
		}
		select {
		case <-time.After(every):
		case <-n.baseCtx.Done():
			return
		}
	}
}

func (n *Node) publishOffer(body offerBody) (uint64, error) {
	se, err := verify.NewEntry(n.platform.Signer(), ledger.KindOffer, body)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(n.baseCtx, recordTimeout)
	defer cancel()
	rc, err := n.opts.Ledger.Append(ctx, se)
	if err != nil {
		return 0, err
	}
	return rc.Index, nil
}

// startOffer attests the platform key once, as at registration, and
// starts the heartbeat with the digest of that evidence in the offer.
func (n *Node) startOffer(ctx context.Context) error {
	o := n.opts.Offer
	if err := o.check(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ev, err := n.attester.Attest(ctx, protocol.RegistrationReportData(n.PlatformKey()))
	if err != nil {
		return fmt.Errorf("node: offer evidence: %w", err)
	}
	evj, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(evj)
	body := offerBody{Classes: []string{string(n.class)}, EvidenceDigest: hex.EncodeToString(sum[:]),
		Memory: o.Memory, Cores: o.Cores, Concurrency: o.Concurrency, Price: o.Price, Regions: o.Regions,
		TTL: uint64(o.TTL / time.Second)}
	n.wg.Add(1)
	go n.offerLoop(body)
	n.log.Info("offering capacity on the ledger", "ttl", o.TTL, "renew_every", o.TTL/3, "memory", o.Memory,
		"cores", o.Cores, "concurrency", o.Concurrency)
	return nil
}
