package cli

import (
	"crypto/ed25519"
	"errors"
	"log/slog"
	"path/filepath"

	"github.com/cloisterhq/cloister/federation"
	"github.com/cloisterhq/cloister/isolate"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/node"
)

// nodeFederation is a node's federation (cloister node --federation): the
// host call its sessions' programs call models with, and the holder of
// its organisation's models and datasets.
type nodeFederation struct {
	org    ed25519.PublicKey
	ledger *lclient.Client
	caller *federation.Caller
	holder *federation.Holder
}

func newNodeFederation(noLedger bool, org ed25519.PublicKey, lc *lclient.Client) (*nodeFederation, error) {
	if noLedger || lc == nil {
		return nil, errors.New("--federation needs a ledger (models, receipts and revocations are on it)")
	}
	if org == nil {
		return nil, errors.New("--federation needs --organisation (the member key whose models this node serves)")
	}
	return &nodeFederation{org: org, ledger: lc, caller: &federation.Caller{Ledger: lc}}, nil
}

func (f *nodeFederation) hostCalls() map[string]isolate.HostCall {
	return f.caller.HostCalls()
}

// mount gives the caller the node's key and serves the holder on the
// node's listener (before it serves).
func (f *nodeFederation) mount(n *node.Node, dataDir string, log *slog.Logger) error {
	f.caller.Signer = n
	h, err := federation.NewHolder(federation.HolderOptions{Dir: filepath.Join(dataDir, "federation"), Host: n, Ledger: f.ledger,
		Organisation: f.org, Logger: log})
	if err != nil {
		return err
	}
	h.Mount(n)
	f.caller.Mount(n)
	f.holder = h
	return nil
}
