package ledger

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	cfg "github.com/cometbft/cometbft/config"
	"github.com/cometbft/cometbft/p2p"

	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/loopback"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// TestnetOptions configure GenerateTestnet.
type TestnetOptions struct {
	// ChainID of the new chain (default "cloister-testnet-<8 random hex>":
	// each testnet is a ledger of its own to clients).
	ChainID string
	// APIAddrs, if set, are the HOST:PORT addresses of the validators'
	// APIs, one per validator, in order (default: free 127.0.0.1 ports).
	APIAddrs []string
}

// TestnetValidator is one generated validator home and the URL its HTTP
// API will serve on.
type TestnetValidator struct {
	Home, APIURL string
}

// GenerateTestnet prepares n validator homes outDir/v0 … outDir/v{n-1} for
// one new chain on this machine: keys, a shared genesis (vote extensions
// from height 1, power 1 each), free 127.0.0.1 ports for peers and API,
// and each home's peers. Each home is then started, in this process or
// another, with StartValidator. Existing homes are never overwritten.
func GenerateTestnet(outDir string, n int, opts TestnetOptions) ([]TestnetValidator, error) {
	if n < 1 || n > maxValidators {
		return nil, fmt.Errorf("testnet: %d validators, want 1 to %d", n, maxValidators)
	}
	chainID := opts.ChainID
	if chainID == "" {
		// A new chain, a new name: clients keep what they verified per
		// ledger origin, so a throwaway testnet must not pass for the
		// last one with another validator set (decision 0172).
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
		chainID = "cloister-testnet-" + hex.EncodeToString(b[:])
	}
	if err := verify.CheckChainID(chainID); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	if opts.APIAddrs != nil && len(opts.APIAddrs) != n {
		return nil, fmt.Errorf("testnet: %d API addresses for %d validators", len(opts.APIAddrs), n)
	}
	homes := make([]string, n)
	for i := range homes {
		homes[i] = filepath.Join(outDir, fmt.Sprintf("v%d", i))
		if _, err := os.Stat(filepath.Join(homes[i], homeConfigFile)); err == nil {
			return nil, fmt.Errorf("testnet: %s already holds a validator; pick an empty directory", homes[i])
		}
		if _, err := os.Stat(filepath.Join(homes[i], "data", storeFile)); err == nil {
			return nil, fmt.Errorf("testnet: %s holds ledger data; pick an empty directory", homes[i])
		}
	}
	pubs := make([]ed25519.PublicKey, n)
	ids := make([]string, n)
	for i, h := range homes {
		var err error
		if pubs[i], ids[i], err = initHome(h); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
	}
	// Hold every listener until all ports are chosen so none repeats.
	var lis []net.Listener
	defer func() {
		for _, l := range lis {
			l.Close()
		}
	}()
	addr := func() (string, error) {
		l, err := loopback.Listen()
		if err != nil {
			return "", err
		}
		lis = append(lis, l)
		return l.Addr().String(), nil
	}
	p2p := make([]string, n)
	api := make([]string, n)
	for i := range homes {
		var err1, err2 error
		p2p[i], err1 = addr()
		if opts.APIAddrs != nil {
			api[i] = opts.APIAddrs[i]
		} else {
			api[i], err2 = addr()
		}
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
	}
	if err := writeGenesis(homes, chainID, pubs); err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	out := make([]TestnetValidator, n)
	for i, h := range homes {
		hc := homeConfig{ChainID: chainID, P2PListen: p2p[i], APIListen: api[i], APIURL: "http://" + api[i], Validators: n}
		for j := range homes {
			if j != i {
				hc.PersistentPeers = append(hc.PersistentPeers, ids[j]+"@"+p2p[j])
			}
		}
		if err := writeHomeConfig(h, hc); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
		out[i] = TestnetValidator{Home: h, APIURL: hc.APIURL}
	}
	return out, nil
}

// JoinTestnet prepares a home at home for a validator that is to join the
// testnet whose validators are peers (homes GenerateTestnet made): its own
// keys, the chain's genesis, free 127.0.0.1 ports, and the peers to dial.
// It returns the home and its consensus key, which becomes a validator
// once the current set decides so ('cloister ledger propose add'); until
// then the node follows the chain without voting.
func JoinTestnet(home string, peers []TestnetValidator) (TestnetValidator, ed25519.PublicKey, error) {
	if len(peers) == 0 {
		return TestnetValidator{}, nil, errors.New("testnet join: no peers")
	}
	if _, err := os.Stat(filepath.Join(home, homeConfigFile)); err == nil {
		return TestnetValidator{}, nil, fmt.Errorf("testnet join: %s already holds a validator", home)
	}
	hc0, err := readHomeConfig(peers[0].Home)
	if err != nil {
		return TestnetValidator{}, nil, err
	}
	pub, _, err := initHome(home)
	if err != nil {
		return TestnetValidator{}, nil, fmt.Errorf("testnet join: %w", err)
	}
	c := cfg.DefaultConfig()
	c.SetRoot(peers[0].Home)
	gen, err := os.ReadFile(c.GenesisFile())
	if err != nil {
		return TestnetValidator{}, nil, fmt.Errorf("testnet join: %w", err)
	}
	c.SetRoot(home)
	if err := atomicfile.WriteFile(c.GenesisFile(), gen, 0o600); err != nil {
		return TestnetValidator{}, nil, err
	}
	hc := homeConfig{ChainID: hc0.ChainID, Validators: len(peers) + 1}
	for _, p := range peers {
		phc, err := readHomeConfig(p.Home)
		if err != nil {
			return TestnetValidator{}, nil, err
		}
		pc := cfg.DefaultConfig()
		pc.SetRoot(p.Home)
		nk, err := p2p.LoadNodeKey(pc.NodeKeyFile())
		if err != nil {
			return TestnetValidator{}, nil, fmt.Errorf("testnet join: peer %s: %w", p.Home, err)
		}
		hc.PersistentPeers = append(hc.PersistentPeers, string(nk.ID())+"@"+phc.P2PListen)
	}
	var lis []net.Listener
	defer func() {
		for _, l := range lis {
			l.Close()
		}
	}()
	for _, dst := range []*string{&hc.P2PListen, &hc.APIListen} {
		l, err := loopback.Listen()
		if err != nil {
			return TestnetValidator{}, nil, fmt.Errorf("testnet join: %w", err)
		}
		lis = append(lis, l)
		*dst = l.Addr().String()
	}
	hc.APIURL = "http://" + hc.APIListen
	if err := writeHomeConfig(home, hc); err != nil {
		return TestnetValidator{}, nil, err
	}
	return TestnetValidator{Home: home, APIURL: hc.APIURL}, pub, nil
}
