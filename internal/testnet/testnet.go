// Package testnet lays out a Cloister network on loopback, every
// component a process of its own: validators, provider nodes of different
// isolate classes and limits (each run by an organisation admitted as a
// consortium member, findable on the ledger by endpoint and organisation,
// offering its capacity), key brokers and a blob store. 'cloister testnet'
// runs one from the command line; tests of features that span nodes start
// one in a few lines:
//
//	net, err := testnet.Start(ctx, testnet.Options{Dir: t.TempDir(), Bin: bin})
//	if err != nil { t.Fatal(err) }
//	defer net.Stop()
//	info := net.Info() // URLs, keys' paths, data directories, PIDs
//
// Every component runs the cloister binary Bin (tests build it without
// the race detector with internal/testbin), listens on a free loopback
// port, and is waited for, within a bound, until it answers its readiness
// probe; nodes count as started once their offers are live on the
// ledger. Stop stops the components in order (dispatchers, nodes, …, validators
// last), each with SIGTERM and, after a grace period, SIGKILL; the
// children have the parent-death signal set, so a test process that dies
// leaves none behind. The processes are supervised by package
// internal/supervise, the supervisor of 'cloister up'.
package testnet

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/loopback"
	"github.com/cloisterhq/cloister/internal/supervise"
	"github.com/cloisterhq/cloister/keys"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// InfoFile, under the network's directory, is its Info as JSON, written
// once every component is ready.
const InfoFile = "testnet.json"

// Options say what to start. The zero value of each field picks the
// default named on it.
type Options struct {
	// Dir holds everything: keys, validators' homes, nodes' and brokers'
	// data, the blob store, logs. It must be empty or absent. Required.
	Dir string
	// Bin is the cloister binary every component runs: in tests
	// testbin.Cloister(), from the CLI the running binary. Required.
	Bin string
	// Validators is the number of validators (default 1: tests that do
	// not test consensus need no more).
	Validators int
	// Nodes are the provider nodes (default DefaultNodes()).
	Nodes []NodeSpec
	// Brokers is the number of key brokers (default 1); NoBroker runs
	// none.
	Brokers  int
	NoBroker bool
	// NoBlobStore runs no blob store.
	NoBlobStore bool
	// NoDispatcher runs no dispatcher; otherwise one, "d1", starts last,
	// with the dispatcher key DIR/keys/dispatcher.key and the program
	// listings Listings (files; see 'cloister dispatch'). StartDispatcher
	// starts it again with other listings.
	NoDispatcher bool
	Listings     []string
	// OfferTTL is how long each node's offer lives (default 30 s); nodes
	// renew it every third of that.
	OfferTTL time.Duration
	// ReadyBound bounds each wait for readiness (default 3 minutes).
	ReadyBound time.Duration
	// Out is told what happens to the processes (one stopping on its
	// own, one killed after its grace period); nil: discarded.
	Out io.Writer
	// Label starts the lines told to Out (default "cloister testnet").
	Label string
	// NoConsole starts the nodes without their web consoles, each of
	// which indexes the whole ledger as it grows: on one machine, CPU
	// that a benchmark of something else does not want competing with
	// it (on a real network each node's console runs on its own
	// machine). Node.Console is then empty.
	NoConsole bool
}

// NodeSpec is one provider node.
type NodeSpec struct {
	// Name is the component's name (default n1, n2, …).
	Name string
	// Organisation is the name of the organisation that runs it
	// (default org1, org2, …, one per node); nodes may share one.
	Organisation string
	// Class is the isolate class: software (default) or tpm, attested by
	// a private swtpm (the Debian package swtpm) started for this node.
	Class string
	// Memory, Cores, Concurrency, Price and Regions are what it offers
	// (defaults 2GiB, 1, 2, none, none).
	Memory      string
	Cores       uint64
	Concurrency uint64
	Price       string
	Regions     []string
	// Args are more arguments for its 'cloister node' command line.
	Args []string
}

// SwtpmInstalled reports whether tpm nodes can run here.
func SwtpmInstalled() bool {
	_, err := exec.LookPath("swtpm")
	return err == nil
}

// DefaultNodes is two nodes of two organisations with different limits
// and prices: a software node, and a tpm node when swtpm is installed
// (another software node otherwise).
func DefaultNodes() []NodeSpec {
	second := "software"
	if SwtpmInstalled() {
		second = "tpm"
	}
	return Nodes(2, []string{"software", second})
}

// Nodes is m nodes whose classes cycle through classes, of organisations
// org1 … orgm, with limits and prices that differ from one to the next;
// the first two are DefaultNodes' when their classes agree.
func Nodes(m int, classes []string) []NodeSpec {
	mem := []string{"2GiB", "1GiB", "4GiB"}
	regions := []string{"eu-west", "us-east", "ap-south"}
	out := make([]NodeSpec, m)
	for i := range out {
		out[i] = NodeSpec{Class: classes[i%len(classes)], Memory: mem[i%3], Cores: uint64(2 - i%2), Concurrency: uint64(4 - 2*(i%2)),
			Price: fmt.Sprintf("0.00%d", i+1), Regions: []string{regions[i%3]}}
	}
	return out
}

// Info is what runs: URLs, keys' paths, data directories and PIDs. It is
// the JSON of 'cloister testnet --json' and DIR/testnet.json.
type Info struct {
	Dir           string         `json:"dir"`
	ChainID       string         `json:"chain_id"`
	Origin        string         `json:"origin"`
	LedgerURL     string         `json:"ledger_url"` // validator v0's API
	Validators    []Validator    `json:"validators"`
	Organisations []Organisation `json:"organisations"`
	Nodes         []Node         `json:"nodes"`
	Brokers       []Broker       `json:"brokers"`
	BlobStore     *BlobStore     `json:"blob_store,omitempty"`
	Dispatchers   []Dispatcher   `json:"dispatchers,omitempty"`
	// Keys are principal key files made for the network: "innovator"
	// (may push to the blob store), "consumer" and "dispatcher" (the
	// dispatchers' signing key, which innovators' delegations name).
	Keys       map[string]string `json:"keys"`
	Supervisor int               `json:"supervisor_pid"`
}

// Process is what every component has.
type Process struct {
	Name string `json:"name"`
	URL  string `json:"url"`
	PID  int    `json:"pid"`
	Log  string `json:"log"`
}

// Validator is one validator.
type Validator struct {
	Process
	Home string `json:"home"`
}

// Organisation is a consortium member that runs nodes.
type Organisation struct {
	Name    string `json:"name"`
	Key     string `json:"key"` // ed25519:…
	KeyFile string `json:"key_file"`
	Member  uint64 `json:"admitted"` // index of its member.admitted entry
}

// Node is one provider node.
type Node struct {
	Process
	Class        string   `json:"class"`
	Organisation string   `json:"organisation"`
	PlatformKey  string   `json:"platform_key"`
	KeyFile      string   `json:"key_file"`
	Data         string   `json:"data"`
	Ledger       string   `json:"ledger"`  // the validator API it records through
	Console      string   `json:"console"` // its web console, read-only
	TPM          string   `json:"tpm,omitempty"`
	TPMAK        string   `json:"tpm_ak,omitempty"` // the TPM attestation key's PEM, for policies
	Memory       string   `json:"memory"`
	Cores        uint64   `json:"cores"`
	Concurrency  uint64   `json:"concurrency"`
	Price        string   `json:"price,omitempty"`
	Regions      []string `json:"regions,omitempty"`
}

// Broker is one key broker.
type Broker struct {
	Process
	SigningKey string `json:"signing_key"`
	SealingKey string `json:"sealing_key"`
	KeyFile    string `json:"key_file"`
	Data       string `json:"data"`
}

// BlobStore is the network's content-addressed store.
type BlobStore struct {
	Process
	Data     string   `json:"data"`
	PushKeys []string `json:"push_keys"` // who may write
}

// Dispatcher is a marketplace dispatcher.
type Dispatcher struct {
	Process
	Key      string   `json:"key"` // ed25519:…
	KeyFile  string   `json:"key_file"`
	Listings []string `json:"listings,omitempty"`
}

// Network is a running test network.
type Network struct {
	opts  Options
	procs *supervise.Supervisor
	lc    *lclient.Client

	mu      sync.Mutex
	info    Info
	order   [][]string // stop order: groups of component names
	stopped bool
}

// Start lays out and starts a network. On failure it stops what it
// started and says which component failed, with the end of its log.
func Start(ctx context.Context, opts Options) (*Network, error) {
	if opts.Dir == "" || opts.Bin == "" {
		return nil, errors.New("testnet: Dir and Bin are required")
	}
	if opts.Validators == 0 {
		opts.Validators = 1
	}
	if opts.Validators < 1 || opts.Validators > 16 {
		return nil, fmt.Errorf("testnet: %d validators: want 1 to 16", opts.Validators)
	}
	if opts.Nodes == nil {
		opts.Nodes = DefaultNodes()
	}
	if len(opts.Nodes) > 32 {
		return nil, fmt.Errorf("testnet: %d nodes: want at most 32", len(opts.Nodes))
	}
	if opts.Brokers == 0 && !opts.NoBroker {
		opts.Brokers = 1
	}
	if opts.NoBroker {
		opts.Brokers = 0
	}
	if opts.Brokers < 0 || opts.Brokers > 16 {
		return nil, fmt.Errorf("testnet: %d brokers: want 0 to 16", opts.Brokers)
	}
	if opts.OfferTTL == 0 {
		opts.OfferTTL = 30 * time.Second
	}
	if opts.OfferTTL < 3*time.Second || opts.OfferTTL > 600*time.Second {
		return nil, fmt.Errorf("testnet: offer TTL %s: want 3s to 10m", opts.OfferTTL)
	}
	if opts.ReadyBound == 0 {
		opts.ReadyBound = 3 * time.Minute
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Label == "" {
		opts.Label = "cloister testnet"
	}
	specs, err := normalise(opts.Nodes)
	if err != nil {
		return nil, err
	}
	opts.Nodes = specs
	if entries, err := os.ReadDir(opts.Dir); err == nil {
		for _, e := range entries {
			if e.Name() != "logs" {
				return nil, fmt.Errorf("testnet: %s is not empty; a test network starts in a new directory", opts.Dir)
			}
		}
	}
	abs, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, err
	}
	opts.Dir = abs
	for _, d := range []string{"keys", "logs", "nodes", "brokers"} {
		if err := os.MkdirAll(filepath.Join(opts.Dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("testnet: %w", err)
		}
	}
	n := &Network{opts: opts}
	n.procs = &supervise.Supervisor{Self: opts.Bin, LogDir: filepath.Join(opts.Dir, "logs"), Label: opts.Label, Out: opts.Out}
	n.info = Info{Dir: opts.Dir, Keys: map[string]string{}, Supervisor: os.Getpid()}
	if err := n.start(ctx); err != nil {
		n.Stop()
		return nil, err
	}
	return n, nil
}

// normalise fills in the nodes' defaults and checks them.
func normalise(in []NodeSpec) ([]NodeSpec, error) {
	out := slices.Clone(in)
	seen := map[string]bool{}
	for i := range out {
		s := &out[i]
		if s.Name == "" {
			s.Name = "n" + strconv.Itoa(i+1)
		}
		if s.Organisation == "" {
			s.Organisation = "org" + strconv.Itoa(i+1)
		}
		if s.Class == "" {
			s.Class = "software"
		}
		if s.Memory == "" {
			s.Memory = "2GiB"
		}
		if s.Cores == 0 {
			s.Cores = 1
		}
		if s.Concurrency == 0 {
			s.Concurrency = 2
		}
		if seen[s.Name] || !isLabel(s.Name) || !isLabel(s.Organisation) {
			return nil, fmt.Errorf("testnet: node %q of %q: names are distinct DNS labels", s.Name, s.Organisation)
		}
		seen[s.Name] = true
		switch s.Class {
		case "software":
		case "tpm":
			if !SwtpmInstalled() {
				return nil, errors.New("testnet: a tpm node needs swtpm (the Debian package swtpm)")
			}
		default:
			return nil, fmt.Errorf("testnet: node %s: class %q: want software or tpm", s.Name, s.Class)
		}
	}
	return out, nil
}

func isLabel(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-') {
			return false
		}
	}
	return true
}

// start does the work of Start.
func (n *Network) start(ctx context.Context) error {
	o := n.opts
	// Keys: one per organisation, and the principals a walkthrough needs.
	orgs := map[string]*keys.PrivateKey{}
	for _, s := range o.Nodes {
		if orgs[s.Organisation] != nil {
			continue
		}
		path := filepath.Join(o.Dir, "keys", s.Organisation+".key")
		k, _, err := keys.LoadOrCreate(path)
		if err != nil {
			return fmt.Errorf("testnet: %w", err)
		}
		orgs[s.Organisation] = k
		n.info.Organisations = append(n.info.Organisations, Organisation{Name: s.Organisation, Key: k.Public().SigningString(), KeyFile: path})
	}
	var pushKeys []string
	for _, name := range []string{"innovator", "consumer", "dispatcher"} {
		path := filepath.Join(o.Dir, "keys", name+".key")
		k, _, err := keys.LoadOrCreate(path)
		if err != nil {
			return fmt.Errorf("testnet: %w", err)
		}
		n.info.Keys[name] = path
		if name == "innovator" {
			pushKeys = append(pushKeys, k.Public().SigningString())
		}
	}
	for _, org := range n.info.Organisations {
		pushKeys = append(pushKeys, org.Key)
	}

	// Addresses: the validators' APIs, then each node (its API and its
	// console), swtpm, broker and the blob store.
	tpms := 0
	for _, s := range o.Nodes {
		if s.Class == "tpm" {
			tpms++
		}
	}
	addrs, err := loopback.Addrs(o.Validators + 2*len(o.Nodes) + 2*tpms + o.Brokers + 1)
	if err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	take := func() string { a := addrs[0]; addrs = addrs[1:]; return a }

	// Validators.
	vals, err := ledger.GenerateTestnet(filepath.Join(o.Dir, "ledger"), o.Validators, ledger.TestnetOptions{APIAddrs: addrs[:o.Validators]})
	if err != nil {
		return err
	}
	addrs = addrs[o.Validators:]
	var valNames []string
	var group []*supervise.Proc
	for i, v := range vals {
		name := fmt.Sprintf("v%d", i)
		c := supervise.Component{Name: name, Args: []string{"ledger", "start", "--home", v.Home}, URL: v.APIURL, Probe: LedgerProbe(v.APIURL)}
		p, err := n.procs.Start(c)
		if err != nil {
			return fmt.Errorf("testnet: starting %s: %w", name, err)
		}
		group = append(group, p)
		valNames = append(valNames, name)
		n.info.Validators = append(n.info.Validators, Validator{Process: process(p), Home: v.Home})
	}
	n.order = [][]string{valNames}
	if err := n.await(ctx, group); err != nil {
		return err
	}
	n.info.LedgerURL = vals[0].APIURL
	if n.lc, err = lclient.New(vals[0].APIURL); err != nil {
		return err
	}
	st, err := n.lc.Status(ctx)
	if err != nil {
		return fmt.Errorf("testnet: the ledger: %w", err)
	}
	n.info.ChainID, n.info.Origin = st.ChainID, ledger.Origin(st.ChainID)

	// The organisations join the consortium: validator v0 admits them.
	vk, err := ledger.ValidatorKey(vals[0].Home)
	if err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	for i, org := range n.info.Organisations {
		se, err := verify.NewEntry(vk, ledger.KindMemberAdmitted, map[string]any{"member": org.Key, "name": org.Name})
		if err != nil {
			return err
		}
		actx, cancel := context.WithTimeout(ctx, o.ReadyBound)
		rc, err := n.lc.Append(actx, se)
		cancel()
		if err != nil {
			return fmt.Errorf("testnet: admitting %s to the consortium: %w", org.Name, err)
		}
		n.info.Organisations[i].Member = rc.Index
	}

	// The services nodes and clients use: swtpms, brokers, the blob store.
	group = nil
	var services []string
	tpmSpec := map[string]string{}
	for _, s := range o.Nodes {
		if s.Class != "tpm" {
			continue
		}
		state := filepath.Join(o.Dir, "tpm", s.Name)
		if err := os.MkdirAll(state, 0o700); err != nil {
			return fmt.Errorf("testnet: %w", err)
		}
		srv, ctl := take(), take()
		bin, _ := exec.LookPath("swtpm")
		name := "swtpm-" + s.Name
		c := supervise.Component{Name: name, Path: bin, URL: "tcp:" + srv,
			Args: []string{"socket", "--tpm2", "--server", "type=tcp,port=" + port(srv) + ",bindaddr=127.0.0.1",
				"--ctrl", "type=tcp,port=" + port(ctl) + ",bindaddr=127.0.0.1", "--tpmstate", "dir=" + state,
				"--flags", "not-need-init,startup-clear"},
			Probe: tcpProbe(srv, ctl)}
		p, err := n.procs.Start(c)
		if err != nil {
			return fmt.Errorf("testnet: starting %s: %w", name, err)
		}
		group = append(group, p)
		services = append(services, name)
		tpmSpec[s.Name] = "tcp:" + srv
	}
	for i := range o.Brokers {
		name := fmt.Sprintf("b%d", i+1)
		addr, data := take(), filepath.Join(o.Dir, "brokers", fmt.Sprintf("b%d", i+1))
		u := "http://" + addr
		c := supervise.Component{Name: name, Args: []string{"broker", "--listen", addr, "--data", data, "--ledger", n.ledgerFor(vals, i)},
			URL: u, Binds: []string{addr}, Probe: httpProbe(u + "/readyz")}
		p, err := n.procs.Start(c)
		if err != nil {
			return fmt.Errorf("testnet: starting %s: %w", name, err)
		}
		group = append(group, p)
		services = append(services, name)
		n.info.Brokers = append(n.info.Brokers, Broker{Process: process(p), Data: data, KeyFile: filepath.Join(data, "broker.key")})
	}
	blobAddr := take()
	if !o.NoBlobStore {
		data := filepath.Join(o.Dir, "blobs")
		u := "http://" + blobAddr
		args := []string{"blob", "serve", "--listen", blobAddr, "--data", data}
		for _, k := range pushKeys {
			args = append(args, "--push-key", k)
		}
		p, err := n.procs.Start(supervise.Component{Name: "blobs", Args: args, URL: u, Binds: []string{blobAddr}, Probe: httpProbe(u + "/v2/")})
		if err != nil {
			return fmt.Errorf("testnet: starting the blob store: %w", err)
		}
		group = append(group, p)
		services = append(services, "blobs")
		n.info.BlobStore = &BlobStore{Process: process(p), Data: data, PushKeys: pushKeys}
	}
	n.order = append([][]string{services}, n.order...)
	if err := n.await(ctx, group); err != nil {
		return err
	}
	for i := range n.info.Brokers {
		b := &n.info.Brokers[i]
		k, err := keys.Load(b.KeyFile)
		if err != nil {
			return fmt.Errorf("testnet: broker %s: %w", b.Name, err)
		}
		b.SigningKey, b.SealingKey = k.Public().SigningString(), k.Public().SealingString()
	}

	// The nodes, each recording through a validator of its own when there
	// are several.
	group = nil
	var nodeNames []string
	orgKey := map[string]string{}
	for _, org := range n.info.Organisations {
		orgKey[org.Name] = org.Key
	}
	for i, s := range o.Nodes {
		addr, consoleAddr, data := take(), take(), filepath.Join(o.Dir, "nodes", s.Name)
		u := "https://" + addr
		lu := n.ledgerFor(vals, i)
		binds, console := []string{addr, consoleAddr}, "http://"+consoleAddr+"/ui/"
		args := []string{"node", "--listen", addr, "--data", data, "--ledger", lu, "--isolate-class", s.Class,
			"--warm-workers", "1", "--endpoint", u, "--organisation", orgKey[s.Organisation],
			"--offer-ttl", o.OfferTTL.String(), "--offer-memory", s.Memory,
			"--offer-cores", strconv.FormatUint(s.Cores, 10), "--offer-concurrency", strconv.FormatUint(s.Concurrency, 10)}
		if o.NoConsole {
			binds, console = binds[:1], ""
		} else {
			args = append(args, "--console", consoleAddr)
		}
		if s.Price != "" {
			args = append(args, "--offer-price", s.Price)
		}
		for _, r := range s.Regions {
			args = append(args, "--offer-region", r)
		}
		if s.Class == "tpm" {
			args = append(args, "--tpm", tpmSpec[s.Name])
		}
		args = append(args, s.Args...)
		p, err := n.procs.Start(supervise.Component{Name: s.Name, Args: args, URL: u, Binds: binds, Probe: NodeProbe(u)})
		if err != nil {
			return fmt.Errorf("testnet: starting %s: %w", s.Name, err)
		}
		group = append(group, p)
		nodeNames = append(nodeNames, s.Name)
		nd := Node{Process: process(p), Class: s.Class, Organisation: s.Organisation, Data: data, Ledger: lu, Console: console,
			KeyFile: filepath.Join(data, "platform.key"), TPM: tpmSpec[s.Name],
			Memory: s.Memory, Cores: s.Cores, Concurrency: s.Concurrency, Price: s.Price, Regions: s.Regions}
		if s.Class == "tpm" {
			nd.TPMAK = filepath.Join(data, "tpm-ak.pem")
		}
		n.info.Nodes = append(n.info.Nodes, nd)
	}
	n.order = append([][]string{nodeNames}, n.order...)
	if err := n.await(ctx, group); err != nil {
		return err
	}
	for i := range n.info.Nodes {
		nd := &n.info.Nodes[i]
		k, err := keys.Load(nd.KeyFile)
		if err != nil {
			return fmt.Errorf("testnet: node %s: %w", nd.Name, err)
		}
		nd.PlatformKey = k.Public().SigningString()
	}
	// Started once every node's offer is live, with its endpoint and
	// organisation: then a dispatcher can find them all.
	if err := n.awaitOffers(ctx); err != nil {
		return err
	}
	if !o.NoDispatcher {
		if _, err := n.StartDispatcher(ctx, "d1", o.Listings); err != nil {
			return err
		}
	}
	return n.writeInfo()
}

// StartDispatcher starts a dispatcher ('cloister dispatch') named name,
// signing with DIR/keys/dispatcher.key and serving the program listings
// given, and waits until it answers. A dispatcher of that name that runs
// is stopped first: a dispatcher keeps no state, and the new one resumes
// every open request from the ledger. The dispatchers stop before
// everything else.
func (n *Network) StartDispatcher(ctx context.Context, name string, listings []string) (Dispatcher, error) {
	if !isLabel(name) {
		return Dispatcher{}, fmt.Errorf("testnet: dispatcher %q: want a DNS label", name)
	}
	n.mu.Lock()
	i := slices.IndexFunc(n.info.Dispatchers, func(d Dispatcher) bool { return d.Name == name })
	n.mu.Unlock()
	if p := n.procs.Get(name); p != nil {
		if i < 0 {
			return Dispatcher{}, fmt.Errorf("testnet: %s is another component's name", name)
		}
		n.procs.Stop(p, 30*time.Second)
	}
	addrs, err := loopback.Addrs(1)
	if err != nil {
		return Dispatcher{}, fmt.Errorf("testnet: %w", err)
	}
	u := "http://" + addrs[0]
	keyFile := n.info.Keys["dispatcher"]
	k, err := keys.Load(keyFile)
	if err != nil {
		return Dispatcher{}, fmt.Errorf("testnet: %w", err)
	}
	args := []string{"dispatch", "--listen", addrs[0], "--ledger", n.info.LedgerURL, "--key", keyFile}
	for _, l := range listings {
		args = append(args, "--program", l)
	}
	p, err := n.procs.Start(supervise.Component{Name: name, Args: args, URL: u, Binds: addrs, Probe: httpProbe(u + "/v1/info")})
	if err != nil {
		return Dispatcher{}, fmt.Errorf("testnet: starting %s: %w", name, err)
	}
	d := Dispatcher{Process: process(p), Key: k.Public().SigningString(), KeyFile: keyFile, Listings: slices.Clone(listings)}
	n.mu.Lock()
	if i < 0 {
		n.info.Dispatchers = append(n.info.Dispatchers, d)
		if len(n.order) == 0 || !slices.Contains(n.order[0], n.info.Dispatchers[0].Name) {
			n.order = append([][]string{{}}, n.order...)
		}
		n.order[0] = append(n.order[0], name)
	} else {
		n.info.Dispatchers[i] = d
	}
	n.mu.Unlock()
	if err := n.await(ctx, []*supervise.Proc{p}); err != nil {
		return Dispatcher{}, err
	}
	return d, n.writeInfo()
}

// ledgerFor is the validator API the i-th node or broker records
// through: spread over the validators.
func (n *Network) ledgerFor(vals []ledger.TestnetValidator, i int) string {
	return vals[i%len(vals)].APIURL
}

func (n *Network) await(ctx context.Context, group []*supervise.Proc) error {
	for _, p := range group {
		if err := n.procs.AwaitReady(ctx, p, n.opts.ReadyBound, nil); err != nil {
			return fmt.Errorf("testnet: %w", err)
		}
	}
	return nil
}

// awaitOffers waits until every node's offer is live on the ledger with
// the node's endpoint and organisation.
func (n *Network) awaitOffers(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, n.opts.ReadyBound)
	defer cancel()
	var missing []string
	for {
		missing = missing[:0]
		l, err := n.lc.Offers(ctx)
		if err == nil {
			for _, nd := range n.info.Nodes {
				if !slices.ContainsFunc(l.Offers, func(o lclient.LiveOffer) bool {
					return o.Node == nd.PlatformKey && o.Endpoint == nd.URL && o.Organisation == n.org(nd.Organisation).Key
				}) {
					missing = append(missing, nd.Name)
				}
			}
			if len(missing) == 0 {
				return nil
			}
		}
		for _, nd := range n.info.Nodes {
			if p := n.procs.Get(nd.Name); p != nil && p.Exited() {
				return fmt.Errorf("testnet: node %s stopped (%v); the end of %s:\n%s", nd.Name, p.ExitErr(), p.Log, supervise.LogTail(p.Log, 12))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("testnet: the offers of %s were not live on the ledger within %s (%v); see %s", strings.Join(missing, ", "), n.opts.ReadyBound, err, filepath.Join(n.opts.Dir, "logs"))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

func (n *Network) org(name string) Organisation {
	for _, o := range n.info.Organisations {
		if o.Name == name {
			return o
		}
	}
	return Organisation{}
}

func (n *Network) writeInfo() error {
	b, err := json.MarshalIndent(n.Info(), "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(n.opts.Dir, InfoFile), append(b, '\n'), 0o600, atomicfile.NoSync())
}

// Info says what runs now: the PIDs are the latest processes'.
func (n *Network) Info() Info {
	n.mu.Lock()
	defer n.mu.Unlock()
	info := n.info
	info.Validators = slices.Clone(info.Validators)
	info.Nodes = slices.Clone(info.Nodes)
	info.Brokers = slices.Clone(info.Brokers)
	info.Organisations = slices.Clone(info.Organisations)
	info.Dispatchers = slices.Clone(info.Dispatchers)
	return info
}

// Ledger is a client of validator v0's API.
func (n *Network) Ledger() *lclient.Client { return n.lc }

// Dir is the network's directory.
func (n *Network) Dir() string { return n.opts.Dir }

// Names lists the components in start order.
func (n *Network) Names() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []string
	for i := len(n.order) - 1; i >= 0; i-- {
		out = append(out, n.order[i]...)
	}
	return out
}

// Running reports whether the named component's process runs.
func (n *Network) Running(name string) bool { return n.procs.Alive(name) }

// PID is the named component's process id, 0 if it never started.
func (n *Network) PID(name string) int {
	if p := n.procs.Get(name); p != nil {
		return p.PID()
	}
	return 0
}

// Kill ends one component at once with SIGKILL, as a crash would: a
// provider that dies mid-run, say.
func (n *Network) Kill(name string) error {
	p := n.procs.Get(name)
	if p == nil {
		return fmt.Errorf("testnet: no component %q; the components are %s", name, strings.Join(n.Names(), ", "))
	}
	n.procs.Kill(p)
	return nil
}

// StopComponent stops one component cleanly (SIGTERM, then SIGKILL after
// 30 s).
func (n *Network) StopComponent(name string) error {
	p := n.procs.Get(name)
	if p == nil {
		return fmt.Errorf("testnet: no component %q; the components are %s", name, strings.Join(n.Names(), ", "))
	}
	n.procs.Stop(p, 30*time.Second)
	return nil
}

// Stop stops every component: the dispatchers, the nodes (they finish recording on
// the ledger), then brokers, blob store and swtpms, then the validators.
// It returns once every process has ended; calling it again does nothing.
func (n *Network) Stop() {
	n.mu.Lock()
	if n.stopped {
		n.mu.Unlock()
		return
	}
	n.stopped = true
	order := slices.Clone(n.order)
	n.mu.Unlock()
	n.procs.StopGroups(30*time.Second, order...)
}

func process(p *supervise.Proc) Process {
	return Process{Name: p.Spec.Name, URL: p.Spec.URL, PID: p.PID(), Log: p.Log}
}

func port(addr string) string {
	_, p, _ := strings.Cut(addr, ":")
	return p
}

// LedgerProbe passes once the ledger API at u answers its status.
func LedgerProbe(u string) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := lclient.New(u)
		if err != nil {
			return err
		}
		_, err = c.Status(ctx)
		return err
	}
}

// httpProbe passes when url answers 200.
func httpProbe(url string) func(context.Context) error {
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", url, resp.Status)
		}
		return nil
	}
}

// NodeProbe passes once the node at u answers its info over its API.
func NodeProbe(u string) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := client.Dial(ctx, u)
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.NodeInfo(ctx)
		return err
	}
}

// tcpProbe passes when every address accepts connections.
func tcpProbe(addrs ...string) func(context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		for _, a := range addrs {
			c, err := d.DialContext(ctx, "tcp", a)
			if err != nil {
				return err
			}
			c.Close()
		}
		return nil
	}
}

// PublicKey parses the organisation's key.
func (o Organisation) PublicKey() (ed25519.PublicKey, error) { return protocol.ParseEd25519Key(o.Key) }
