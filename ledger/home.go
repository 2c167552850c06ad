package ledger

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	cfg "github.com/cometbft/cometbft/config"
	cmted25519 "github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/p2p"
	"github.com/cometbft/cometbft/privval"
	cmttypes "github.com/cometbft/cometbft/types"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Validator key files, as CometBFT names them. GenerateValidatorKeys
// writes them into a directory of their own; PrepareHome copies them into
// a home's config directory.
const (
	NodeKeyFile      = "node_key.json"
	ValidatorKeyFile = "priv_validator_key.json"
)

// ValidatorIdentity is the public part of a validator's keys: what an
// organisation hands the others so they can write the genesis and dial it.
type ValidatorIdentity struct {
	// PubKey is the Ed25519 consensus key (it also cosigns checkpoints).
	PubKey ed25519.PublicKey
	// NodeID is the peer-to-peer identity, hex of the node key's address.
	NodeID string
}

// GenerateValidatorKeys creates a validator's private keys in dir (which
// must not hold any yet), readable by the owner only, and returns their
// public part. Nothing else is written: the signing state belongs to the
// home the keys are later used in.
func GenerateValidatorKeys(dir string) (ValidatorIdentity, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return ValidatorIdentity{}, err
	}
	for _, f := range []string{NodeKeyFile, ValidatorKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return ValidatorIdentity{}, fmt.Errorf("validator keys: %s already exists; keys are never overwritten", filepath.Join(dir, f))
		}
	}
	nk, err := p2p.LoadOrGenNodeKey(filepath.Join(dir, NodeKeyFile))
	if err != nil {
		return ValidatorIdentity{}, fmt.Errorf("validator keys: node key: %w", err)
	}
	pv := privval.NewFilePV(cmted25519.GenPrivKey(), filepath.Join(dir, ValidatorKeyFile), "")
	pv.Key.Save()
	for _, f := range []string{NodeKeyFile, ValidatorKeyFile} {
		if err := os.Chmod(filepath.Join(dir, f), 0o600); err != nil {
			return ValidatorIdentity{}, err
		}
	}
	return ValidatorIdentity{PubKey: ed25519.PublicKey(pv.Key.PubKey.Bytes()), NodeID: string(nk.ID())}, nil
}

// GenesisValidator is one member of a new chain's validator set.
type GenesisValidator struct {
	Name   string
	PubKey ed25519.PublicKey
}

// NewGenesis returns the genesis document (CometBFT JSON) of a new chain
// whose validators are these, power 1 each, with the consensus parameters
// every Cloister ledger uses.
func NewGenesis(chainID string, validators []GenesisValidator) ([]byte, error) {
	if err := verify.CheckChainID(chainID); err != nil {
		return nil, err
	}
	if len(validators) < 1 || len(validators) > maxValidators {
		return nil, fmt.Errorf("genesis: %d validators, want 1 to %d", len(validators), maxValidators)
	}
	gen, err := genesisDoc(chainID, validators)
	if err != nil {
		return nil, err
	}
	return cmtjsonGenesis(gen)
}

// HomeSpec says how PrepareHome lays out a validator home.
type HomeSpec struct {
	// KeysDir holds NodeKeyFile and ValidatorKeyFile.
	KeysDir string
	// Genesis is the chain's genesis document; it must list this
	// validator's key.
	Genesis []byte
	// P2PListen and APIListen are host:port to bind; APIURL is the API's
	// URL as others reach it.
	P2PListen, APIListen, APIURL string
	// ExternalAddress is the host:port peers dial (empty: not advertised).
	ExternalAddress string
	// Peers are the other validators, "nodeid@host:port".
	Peers []string
	// Validators is the size of the validator set.
	Validators int
}

// PrepareHome lays out a validator home at home from keys, genesis and
// addresses — what a container does before 'cloister ledger start' on a
// volume that may already hold the chain. It copies the keys in, writes the
// genesis (refusing a different one where a genesis already is: a home
// belongs to one chain) and the home configuration, and leaves the
// signing state and the chain data alone: the state is what stops a
// restarted validator from signing twice, and it is created on first start.
func PrepareHome(home string, spec HomeSpec) (ValidatorIdentity, error) {
	var id ValidatorIdentity
	c := cfg.DefaultConfig()
	c.SetRoot(home)
	for _, d := range []string{filepath.Join(home, "config"), filepath.Join(home, "data")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return id, err
		}
	}
	gen, err := cmttypes.GenesisDocFromJSON(spec.Genesis)
	if err != nil {
		return id, fmt.Errorf("ledger home %s: genesis: %w", home, err)
	}
	if err := verify.CheckChainID(gen.ChainID); err != nil {
		return id, fmt.Errorf("ledger home %s: genesis: %w", home, err)
	}
	for _, p := range spec.Peers {
		if nid, addr, ok := strings.Cut(p, "@"); !ok || len(nid) != 40 || addr == "" {
			return id, fmt.Errorf("ledger home %s: peer %q: want nodeid@host:port", home, p)
		}
	}
	if spec.Validators < 1 {
		spec.Validators = len(gen.Validators)
	}
	keys := map[string][]byte{}
	for _, f := range []string{NodeKeyFile, ValidatorKeyFile} {
		b, err := os.ReadFile(filepath.Join(spec.KeysDir, f))
		if err != nil {
			return id, fmt.Errorf("ledger home %s: validator keys: %w", home, err)
		}
		keys[f] = b
	}
	for f, b := range keys {
		dst := filepath.Join(home, "config", f)
		if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, b) {
			continue
		}
		if err := atomicfile.WriteFile(dst, b, 0o600); err != nil {
			return id, err
		}
	}
	pv, err := loadFilePV(c)
	if err != nil {
		return id, fmt.Errorf("ledger home %s: %w", home, err)
	}
	nk, err := p2p.LoadNodeKey(c.NodeKeyFile())
	if err != nil {
		return id, fmt.Errorf("ledger home %s: node key: %w", home, err)
	}
	id = ValidatorIdentity{PubKey: ed25519.PublicKey(pv.Key.PubKey.Bytes()), NodeID: string(nk.ID())}
	member := false
	for _, v := range gen.Validators {
		member = member || bytes.Equal(v.PubKey.Bytes(), id.PubKey)
	}
	if !member {
		return id, fmt.Errorf("ledger home %s: the genesis of %s does not list this validator's key: wrong keys or wrong genesis", home, gen.ChainID)
	}
	if _, err := os.Stat(c.GenesisFile()); err == nil {
		old, err := cmttypes.GenesisDocFromFile(c.GenesisFile())
		if err != nil {
			return id, fmt.Errorf("ledger home %s: existing genesis: %w", home, err)
		}
		if old.ChainID != gen.ChainID || !old.GenesisTime.Equal(gen.GenesisTime) || !bytes.Equal(old.ValidatorHash(), gen.ValidatorHash()) {
			return id, fmt.Errorf("ledger home %s: holds the genesis of %s (%s) and was given another; a home belongs to one chain", home, old.ChainID, old.GenesisTime)
		}
	}
	if err := atomicfile.WriteFile(c.GenesisFile(), spec.Genesis, 0o600); err != nil {
		return id, err
	}
	hc := homeConfig{ChainID: gen.ChainID, P2PListen: spec.P2PListen, APIListen: spec.APIListen, APIURL: spec.APIURL,
		P2PExternal: spec.ExternalAddress, PersistentPeers: spec.Peers, Validators: spec.Validators}
	return id, writeHomeConfig(home, hc)
}
