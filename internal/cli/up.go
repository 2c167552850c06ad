package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/client"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/supervise"
	"github.com/cloisterhq/cloister/internal/testnet"
	"github.com/cloisterhq/cloister/ledger"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

// 'cloister up' runs a local network under one directory: a node with its
// embedded ledger, or with --validators N a node recording on a ledger of
// N validators. Each component is a process of its own (this binary, as
// 'cloister node' or 'cloister ledger start'), watched by the 'up' process,
// its supervisor. The directory holds:
//
//	up.json        what the network is (written once, when it is created)
//	running.json   what runs now, while a supervisor runs
//	up.sock        the supervisor's control socket, while it runs
//	node/          the node's data directory
//	ledger/vI      the validators' homes (with --validators)
//	logs/NAME.log  each component's standard error (and up.log, detached)
//
// The supervisor holds a lock on the directory itself, so that one runs at
// a time; when it stops (Ctrl-C, SIGTERM, 'cloister down') it stops the
// node first, then the validators, and removes running.json and up.sock:
// what is left is the network's state, which the next 'up' resumes.
// A component is a name, the arguments it runs with and how to tell it is
// ready: a new one (a console, say) is one more entry in components().

const (
	defaultUpDir  = "cloister-local"
	upConfigFile  = "up.json"
	upRunningFile = "running.json"
	upSocketFile  = "up.sock"
	upLogDir      = "logs"

	defaultUpListen       = "127.0.0.1:7443"
	defaultUpLedgerListen = "127.0.0.1:7480"
)

// upConfig is DIR/up.json: what the network is, fixed when it is created.
type upConfig struct {
	Version      int    `json:"version"`
	Validators   int    `json:"validators"` // 0: the node's embedded ledger
	Listen       string `json:"listen"`
	LedgerListen string `json:"ledger_listen"` // the embedded ledger's API, or validator 0's
	BlobListen   string `json:"blob_listen,omitempty"`
	IsolateClass string `json:"isolate_class"`
	TPM          string `json:"tpm,omitempty"`
	// Origin is the ledger's, learnt at the first start; 'down --purge'
	// removes the client state kept for it.
	Origin string `json:"origin,omitempty"`
}

// upRunning is DIR/running.json and the answer to a status request.
type upRunning struct {
	PID         int           `json:"pid"`
	Dir         string        `json:"dir"`
	Ready       bool          `json:"ready"`
	PlatformKey string        `json:"platform_key,omitempty"`
	NodeURL     string        `json:"node_url"`
	LedgerURL   string        `json:"ledger_url"`
	BlobURL     string        `json:"blob_url,omitempty"`
	Origin      string        `json:"origin,omitempty"`
	Components  []upCompState `json:"components"`
}

type upCompState struct {
	Name    string `json:"name"`
	URL     string `json:"url,omitempty"`
	PID     int    `json:"pid,omitempty"`
	Running bool   `json:"running"`
	Log     string `json:"log"`
	Exit    string `json:"exit,omitempty"` // how it ended, if it did
}

// upRequest and upReply are the control socket's protocol: one JSON line
// each way.
type upRequest struct {
	Op    string   `json:"op"` // status, start, stop
	Names []string `json:"names,omitempty"`
}

type upReply struct {
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	Running upRunning `json:"running"`
}

type upFlags struct {
	dir          string
	validators   int
	listen       string
	ledgerListen string
	blobListen   string
	class        string
	tpm          string
	detach       bool
	child        bool // the detached supervisor itself
}

func newUpCmd() *cobra.Command {
	var f upFlags
	cmd := &cobra.Command{
		Use:   "up [--dir DIR] [--validators N] [--detach]",
		Short: "Run a local network: a node with its ledger, all state under one directory",
		Long: `up starts, on this machine, a node (https://127.0.0.1:7443) with its embedded
ledger, whose API it serves on http://127.0.0.1:7480; with --validators N, a
ledger of N validators instead (their APIs on 7480, 7481, …; the node
records on the first). Everything lives under DIR (default ./cloister-local):
the node's data and platform key, the validators' homes, and each
component's log in DIR/logs. It prints the URLs, the node's platform key and
the commands to go on with, and runs until Ctrl-C or SIGTERM, which stop
every component cleanly (the node first) and leave only the state, which the
next 'up' resumes as it was.

With --detach it starts everything in the background, waits until it is
ready, prints the same and returns; 'cloister down' stops it.

Run again while the network runs, up starts whatever was stopped (by
'cloister down NAME', or a crash) and prints the summary again.

The node admits anyone who can reach it to create sessions (admission
"open"), which it allows only on loopback addresses: this is a network for
one machine. Listening addresses are fixed when DIR is created; to change
them, or to start over, 'cloister down --purge' first.

Exit status: 0 stopped by a signal or by 'cloister down' (or, with
--detach, running); 1 a component could not start (the end of its log is
printed); 2 bad usage.`,
		Example: `  cloister up
  cloister up --detach && cloister down
  cloister up --validators 4 --dir ./net
  cloister down --purge          # stop and remove everything: start over`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runUp(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", defaultUpDir, "directory holding the network's state and logs")
	fl.IntVar(&f.validators, "validators", 0, "run a ledger of N validators (0: the node's embedded ledger)")
	fl.StringVar(&f.listen, "listen", defaultUpListen, "the node's address (loopback)")
	fl.StringVar(&f.ledgerListen, "ledger-listen", defaultUpLedgerListen, "the ledger API's address (loopback); validator I listens on its port + I")
	fl.StringVar(&f.blobListen, "blob-listen", "", "also serve the node's blob store on this loopback address (docs/storage.md)")
	fl.StringVar(&f.class, "isolate-class", "software", "the node's isolate class: software or tpm")
	fl.StringVar(&f.tpm, "tpm", "", "with --isolate-class tpm: the TPM device or tcp:HOST:PORT of a swtpm server")
	fl.BoolVarP(&f.detach, "detach", "d", false, "run in the background; 'cloister down' stops it")
	fl.BoolVar(&f.child, "supervise", false, "run as the detached supervisor (internal)")
	fl.MarkHidden("supervise")
	return cmd
}

func newDownCmd() *cobra.Command {
	var (
		dir   string
		purge bool
	)
	cmd := &cobra.Command{
		Use:   "down [NAME...] [--dir DIR] [--purge]",
		Short: "Stop the local network of 'cloister up' (or some of its components), and optionally remove it",
		Long: `down stops what 'cloister up' runs from DIR (default ./cloister-local) and waits
until it has stopped: the node first, then the validators. The state stays
in DIR, and 'cloister up' starts it again as it was.

With names (node, v0, v1, …) it stops only those components and the rest
keeps running; 'cloister up' starts them again.

--purge also removes DIR — keys, ledger, sessions, logs — and the ledger
state 'cloister ledger verify' kept for the network's ledger in the user
config directory: the next 'cloister up' starts a new network. It refuses
a directory that 'cloister up' did not make.

Exit status: 0 stopped (or nothing was running); 1 it could not be stopped
or removed; 2 bad usage.`,
		Example: `  cloister down
  cloister down v3                # stop one validator of 'cloister up --validators 4'
  cloister down --purge           # stop and remove everything: start over`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if purge && len(args) > 0 {
				return usageError("down: --purge removes everything; it takes no component names")
			}
			return runDown(cmd, dir, args, purge)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", defaultUpDir, "directory of the network ('cloister up --dir')")
	cmd.Flags().BoolVar(&purge, "purge", false, "also remove the directory and the ledger state kept for it")
	return cmd
}

// selfName is how the printed commands name this program: as it was
// invoked when that was a path ("./cloister"), else "cloister".
func selfName() string {
	a := os.Args[0]
	if strings.Contains(a, "/") && !strings.Contains(a, "go-build") {
		return a
	}
	return "cloister"
}

// dirFlag is " --dir DIR" for printed commands, or "" for the default.
func dirFlag(dir string) string {
	if dir == defaultUpDir {
		return ""
	}
	return " --dir " + dir
}

// askSupervisor sends one request to the supervisor of dir.
func askSupervisor(ctx context.Context, dir string, req upRequest) (*upReply, error) {
	var rep upReply
	if err := supervise.Ask(ctx, filepath.Join(dir, upSocketFile), req, &rep); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	if !rep.OK {
		return &rep, errors.New(rep.Error)
	}
	return &rep, nil
}

func runUp(cmd *cobra.Command, f *upFlags) error {
	if f.validators < 0 || f.validators > 16 {
		return usageError("up: --validators %d: want 0 (the node's embedded ledger) to 16", f.validators)
	}
	if f.class != "software" && f.class != "tpm" {
		return usageError("up: --isolate-class %q: want software or tpm", f.class)
	}
	if f.class == "tpm" && f.tpm == "" {
		return usageError("up: --isolate-class tpm needs --tpm DEVICE or --tpm tcp:HOST:PORT")
	}
	for _, a := range []struct{ flag, addr string }{{"--listen", f.listen}, {"--ledger-listen", f.ledgerListen}, {"--blob-listen", f.blobListen}} {
		if a.addr == "" && a.flag == "--blob-listen" {
			continue
		}
		if err := checkLoopback(a.addr); err != nil {
			return usageError("up: %s %q: %v; 'cloister up' is a network for this machine ('cloister node' serves others)", a.flag, a.addr, err)
		}
	}
	cfg, err := upConfigFor(cmd, f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(f.dir, upLogDir), 0o700); err != nil {
		return failure(fmt.Errorf("up: %w", err))
	}
	lock, ok, err := supervise.LockDir(f.dir)
	if err != nil {
		return failure(fmt.Errorf("up: %w", err))
	}
	if !ok {
		// A supervisor runs: have it start whatever is stopped.
		ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Minute)
		defer cancel()
		p := startProgress(cmd, "the stopped components to start", 0)
		rep, err := askSupervisor(ctx, f.dir, upRequest{Op: "start"})
		p.done()
		if err != nil {
			return failure(fmt.Errorf("up: %s is in use by another 'cloister up', which could not start its components: %w", f.dir, err))
		}
		printUpSummary(cmd.OutOrStdout(), f.dir, cfg, &rep.Running, true)
		return nil
	}
	if f.detach {
		lock.Close()
		return detachUp(cmd, f, cfg)
	}
	defer lock.Close()
	return superviseUp(cmd, f, cfg)
}

// upConfigFor reads DIR/up.json, or writes it for a new network from the
// flags. Flags given explicitly must agree with an existing network.
func upConfigFor(cmd *cobra.Command, f *upFlags) (*upConfig, error) {
	path := filepath.Join(f.dir, upConfigFile)
	b, err := os.ReadFile(path)
	if err == nil {
		var cfg upConfig
		if err := json.Unmarshal(b, &cfg); err != nil || cfg.Version != 1 {
			return nil, failure(fmt.Errorf("up: %s is damaged (%v); move %s away, or remove it with 'cloister down --purge%s'", path, err, f.dir, dirFlag(f.dir)))
		}
		for _, c := range []struct {
			flag, got, have string
		}{
			{"validators", strconv.Itoa(f.validators), strconv.Itoa(cfg.Validators)},
			{"listen", f.listen, cfg.Listen},
			{"ledger-listen", f.ledgerListen, cfg.LedgerListen},
			{"blob-listen", f.blobListen, cfg.BlobListen},
			{"isolate-class", f.class, cfg.IsolateClass},
			{"tpm", f.tpm, cfg.TPM},
		} {
			if cmd.Flags().Changed(c.flag) && c.got != c.have {
				return nil, usageError("up: %s holds a network made with --%s %s; start it as it is (without --%s), or remove it first with 'cloister down --purge%s'",
					f.dir, c.flag, c.have, c.flag, dirFlag(f.dir))
			}
		}
		return &cfg, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, failure(fmt.Errorf("up: %w", err))
	}
	entries, _ := os.ReadDir(f.dir)
	for _, e := range entries {
		if e.Name() != upLogDir {
			return nil, usageError("up: %s is not empty and was not made by 'cloister up'; choose another --dir", f.dir)
		}
	}
	cfg := &upConfig{Version: 1, Validators: f.validators, Listen: f.listen, LedgerListen: f.ledgerListen,
		BlobListen: f.blobListen, IsolateClass: f.class, TPM: f.tpm}
	return cfg, nil
}

func saveUpConfig(dir string, cfg *upConfig) error {
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return atomicfile.WriteFile(filepath.Join(dir, upConfigFile), append(b, '\n'), 0o600)
}

// portPlus is addr with its port increased by i.
func portPlus(addr string, i int) string {
	host, port, _ := net.SplitHostPort(addr)
	n, _ := strconv.Atoi(port)
	return net.JoinHostPort(host, strconv.Itoa(n+i))
}

// components lists the network's processes in start order; stopping goes
// in the reverse order.
func components(dir string, cfg *upConfig) []supervise.Component {
	var out []supervise.Component
	nodeArgs := []string{"node", "--data", filepath.Join(dir, "node"), "--listen", cfg.Listen, "--isolate-class", cfg.IsolateClass}
	if cfg.TPM != "" {
		nodeArgs = append(nodeArgs, "--tpm", cfg.TPM)
	}
	if cfg.Validators == 0 {
		nodeArgs = append(nodeArgs, "--ledger-listen", cfg.LedgerListen)
	} else {
		for i := range cfg.Validators {
			u := "http://" + portPlus(cfg.LedgerListen, i)
			out = append(out, supervise.Component{
				Name:  fmt.Sprintf("v%d", i),
				Args:  []string{"ledger", "start", "--home", filepath.Join(dir, "ledger", fmt.Sprintf("v%d", i))},
				URL:   u,
				Binds: []string{portPlus(cfg.LedgerListen, i)},
				Probe: ledgerProbe(u),
			})
		}
		nodeArgs = append(nodeArgs, "--ledger", "http://"+cfg.LedgerListen)
	}
	if cfg.BlobListen != "" {
		nodeArgs = append(nodeArgs, "--blob-listen", cfg.BlobListen)
	}
	nodeURL := "https://" + cfg.Listen
	ledgerURL := "http://" + cfg.LedgerListen
	binds := []string{cfg.Listen}
	if cfg.Validators == 0 {
		binds = append(binds, cfg.LedgerListen)
	}
	if cfg.BlobListen != "" {
		binds = append(binds, cfg.BlobListen)
	}
	out = append(out, supervise.Component{Name: "node", Args: nodeArgs, URL: nodeURL, Binds: binds, Probe: func(ctx context.Context) error {
		if err := testnet.NodeProbe(nodeURL)(ctx); err != nil {
			return err
		}
		if cfg.Validators == 0 {
			return ledgerProbe(ledgerURL)(ctx)
		}
		return nil
	}})
	return out
}

// ledgerProbe passes once the ledger API at u answers its status.
var ledgerProbe = testnet.LedgerProbe

// supervisor runs the components of one network.
type supervisor struct {
	dir   string
	cfg   *upConfig
	out   io.Writer // where events are told (the terminal, or up.log)
	procs *supervise.Supervisor

	mu   sync.Mutex
	info upRunning

	// writeMu orders the writes of running.json with its removal at the
	// end: a component's exit watcher, which writes it, may run after
	// the supervisor has stopped everything and removed it.
	writeMu  sync.Mutex
	finished bool
}

// newSupervisor makes the supervisor of dir's network; self is this
// binary, which every component runs.
func newSupervisor(dir string, cfg *upConfig, self string, out io.Writer) *supervisor {
	sv := &supervisor{dir: dir, cfg: cfg, out: out}
	sv.procs = &supervise.Supervisor{Self: self, LogDir: filepath.Join(dir, upLogDir), Label: "cloister up", Out: out,
		OnExit: func(p *supervise.Proc, unexpected bool) {
			if unexpected {
				fmt.Fprintf(out, "cloister up: '%s up%s' starts it again\n", selfName(), dirFlag(dir))
			}
			sv.writeRunning()
		}}
	return sv
}

// superviseUp runs the network in this process until a signal or a stop
// request, then stops it.
func superviseUp(cmd *cobra.Command, f *upFlags, cfg *upConfig) error {
	self, err := os.Executable()
	if err != nil {
		return failure(fmt.Errorf("up: %w", err))
	}
	abs, err := filepath.Abs(f.dir)
	if err != nil {
		return failure(fmt.Errorf("up: %w", err))
	}
	sv := newSupervisor(f.dir, cfg, self, cmd.ErrOrStderr())
	sv.info = upRunning{PID: os.Getpid(), Dir: abs, NodeURL: "https://" + cfg.Listen, LedgerURL: "http://" + cfg.LedgerListen}
	if cfg.BlobListen != "" {
		sv.info.BlobURL = "http://" + cfg.BlobListen
	}
	// Leftovers of a supervisor that was killed.
	os.Remove(filepath.Join(f.dir, upRunningFile))

	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if _, err := os.Stat(filepath.Join(f.dir, upConfigFile)); errors.Is(err, fs.ErrNotExist) {
		if err := sv.create(); err != nil {
			return err
		}
	}
	ln, err := supervise.Listen(filepath.Join(f.dir, upSocketFile))
	if err != nil {
		return failure(fmt.Errorf("up: control socket: %w", err))
	}
	defer os.Remove(filepath.Join(f.dir, upSocketFile))
	defer ln.Close()
	defer sv.removeRunning()
	defer sv.stopAll()

	p := startProgress(cmd, "the local network to start", 0)
	err = sv.startStopped(ctx, p)
	p.done()
	if err != nil {
		return err
	}
	if err := sv.learn(ctx); err != nil {
		return failure(err)
	}
	sv.writeRunning()
	printUpSummary(cmd.OutOrStdout(), f.dir, cfg, sv.snapshot(), f.child)

	stopReq := make(chan struct{})
	var once sync.Once
	go sv.serve(ctx, ln, func() { once.Do(func() { close(stopReq) }) })
	select {
	case <-ctx.Done():
		fmt.Fprintf(sv.out, "\ncloister up: stopping (the node first)…\n")
	case <-stopReq:
		fmt.Fprintf(sv.out, "cloister up: stopping, as 'cloister down' asked (the node first)…\n")
	}
	sv.stopAll()
	fmt.Fprintf(sv.out, "cloister up: stopped. The state is kept in %s: '%s up%s' starts it again as it was; '%s down --purge%s' removes it.\n",
		f.dir, selfName(), dirFlag(f.dir), selfName(), dirFlag(f.dir))
	return nil
}

// create makes a new network's directory: the validators' homes, then
// up.json (last, so that a failure leaves no half-made network).
func (sv *supervisor) create() error {
	cfg := sv.cfg
	for _, c := range components(sv.dir, cfg) {
		if err := portsFree(c.Binds); err != nil {
			return failure(fmt.Errorf("up: %v", err))
		}
	}
	if cfg.Validators > 0 {
		addrs := make([]string, cfg.Validators)
		for i := range addrs {
			addrs[i] = portPlus(cfg.LedgerListen, i)
		}
		// The default chain id is one of its own: to clients, which keep
		// what they verified per ledger origin, a new network is a new
		// ledger.
		if _, err := ledger.GenerateTestnet(filepath.Join(sv.dir, "ledger"), cfg.Validators, ledger.TestnetOptions{APIAddrs: addrs}); err != nil {
			return failure(fmt.Errorf("up: %w", err))
		}
	}
	if err := saveUpConfig(sv.dir, cfg); err != nil {
		return failure(fmt.Errorf("up: %w", err))
	}
	return nil
}

// portsFree checks that nothing listens on these addresses yet.
func portsFree(addrs []string) error {
	err := supervise.PortsFree(addrs)
	var inUse *supervise.PortInUseError
	if errors.As(err, &inUse) {
		return fmt.Errorf("%s is in use, by another node or 'cloister up' perhaps: stop it, or choose other addresses for a new network (--listen, --ledger-listen, --blob-listen)", inUse.Addr)
	}
	return err
}

// startStopped starts, in order, every component that is not running and
// waits until each is ready. A component that fails to start stops the
// start; the end of its log says why.
func (sv *supervisor) startStopped(ctx context.Context, p *progress) error {
	specs := components(sv.dir, sv.cfg)
	// The validators start together (none is live before the others
	// are); the node after them.
	var group []*supervise.Proc
	flush := func() error {
		for _, r := range group {
			if err := sv.procs.AwaitReady(ctx, r, 3*time.Minute, p.set); err != nil {
				return failure(fmt.Errorf("up: %w", err))
			}
		}
		group = nil
		return nil
	}
	for _, c := range specs {
		if sv.procs.Alive(c.Name) {
			continue
		}
		if c.Name == "node" {
			if err := flush(); err != nil {
				return err
			}
		}
		if err := portsFree(c.Binds); err != nil {
			return failure(fmt.Errorf("up: %s: %v", c.Name, err))
		}
		r, err := sv.procs.Start(c)
		if err != nil {
			return failure(fmt.Errorf("up: starting %s: %w", c.Name, err))
		}
		group = append(group, r)
	}
	return flush()
}

// learn asks the running network what the summary shows: the node's
// platform key and the ledger's origin.
func (sv *supervisor) learn(ctx context.Context) error {
	c, err := client.Dial(ctx, sv.info.NodeURL)
	if err != nil {
		return err
	}
	defer c.Close()
	info, err := c.NodeInfo(ctx)
	if err != nil {
		return fmt.Errorf("up: the node: %w", err)
	}
	lc, err := lclient.New(sv.info.LedgerURL)
	if err != nil {
		return err
	}
	st, err := lc.Status(ctx)
	if err != nil {
		return fmt.Errorf("up: the ledger: %w", err)
	}
	sv.mu.Lock()
	sv.info.PlatformKey = info.PlatformKey
	sv.info.Origin = ledger.Origin(st.ChainID)
	sv.info.Ready = true
	sv.mu.Unlock()
	if sv.cfg.Origin != sv.info.Origin {
		sv.cfg.Origin = sv.info.Origin
		return saveUpConfig(sv.dir, sv.cfg)
	}
	return nil
}

func (sv *supervisor) snapshot() *upRunning {
	sv.mu.Lock()
	defer sv.mu.Unlock()
	info := sv.info
	info.Components = nil
	for _, c := range components(sv.dir, sv.cfg) {
		st := upCompState{Name: c.Name, URL: c.URL, Log: filepath.Join(sv.dir, upLogDir, c.Name+".log")}
		if r := sv.procs.Get(c.Name); r != nil {
			st.PID = r.PID()
			st.Running, st.Exit = r.State()
		}
		info.Components = append(info.Components, st)
	}
	return &info
}

func (sv *supervisor) writeRunning() {
	sv.writeMu.Lock()
	defer sv.writeMu.Unlock()
	if sv.finished {
		return
	}
	b, _ := json.MarshalIndent(sv.snapshot(), "", "  ")
	atomicfile.WriteFile(filepath.Join(sv.dir, upRunningFile), append(b, '\n'), 0o600, atomicfile.NoSync())
}

// removeRunning removes running.json for good: no later writeRunning
// puts it back.
func (sv *supervisor) removeRunning() {
	sv.writeMu.Lock()
	defer sv.writeMu.Unlock()
	sv.finished = true
	os.Remove(filepath.Join(sv.dir, upRunningFile))
}

// stopNames stops the named components (all, if names is empty): the
// node first, then the validators together.
func (sv *supervisor) stopNames(names []string) {
	var first, then []string
	for _, c := range components(sv.dir, sv.cfg) {
		if len(names) > 0 && !slices.Contains(names, c.Name) {
			continue
		}
		if c.Name == "node" {
			first = append(first, c.Name)
		} else {
			then = append(then, c.Name)
		}
	}
	sv.procs.StopGroups(30*time.Second, first, then)
	sv.writeRunning()
}

func (sv *supervisor) stopAll() { sv.stopNames(nil) }

// serve answers control requests until ctx ends; shutdown is called on a
// request to stop everything.
func (sv *supervisor) serve(ctx context.Context, ln net.Listener, shutdown func()) {
	var startMu sync.Mutex // one start at a time
	supervise.Serve(ctx, ln, func(raw json.RawMessage) (any, func()) {
		var req upRequest
		if err := json.Unmarshal(raw, &req); err != nil {
			return upReply{Error: "malformed request"}, nil
		}
		rep := upReply{OK: true}
		switch req.Op {
		case "status":
		case "start":
			startMu.Lock()
			err := sv.startStopped(ctx, nil)
			startMu.Unlock()
			if err != nil {
				rep = upReply{Error: unwrapExit(err).Error()}
			}
			sv.writeRunning()
		case "stop":
			if len(req.Names) == 0 {
				rep.Running = *sv.snapshot()
				return rep, shutdown
			}
			known := map[string]bool{}
			for _, c := range components(sv.dir, sv.cfg) {
				known[c.Name] = true
			}
			for _, n := range req.Names {
				if !known[n] {
					rep = upReply{Error: fmt.Sprintf("no component %q here; the components are %s", n, strings.Join(slices.Sorted(mapKeys(known)), ", "))}
				}
			}
			if rep.OK {
				sv.stopNames(req.Names)
			}
		default:
			rep = upReply{Error: fmt.Sprintf("unknown request %q", req.Op)}
		}
		rep.Running = *sv.snapshot()
		return rep, nil
	})
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// detachUp starts the supervisor in the background (a session of its
// own, its output in DIR/logs/up.log), waits until the network is ready or
// the supervisor fails, and prints the summary.
func detachUp(cmd *cobra.Command, f *upFlags, cfg *upConfig) error {
	self, err := os.Executable()
	if err != nil {
		return failure(fmt.Errorf("up: %w", err))
	}
	logPath := filepath.Join(f.dir, upLogDir, "up.log")
	args := []string{"up", "--supervise", "--dir", f.dir, "--validators", strconv.Itoa(f.validators), "--listen", f.listen,
		"--ledger-listen", f.ledgerListen, "--isolate-class", f.class}
	if f.blobListen != "" {
		args = append(args, "--blob-listen", f.blobListen)
	}
	if f.tpm != "" {
		args = append(args, "--tpm", f.tpm)
	}
	if _, err := os.Stat(filepath.Join(f.dir, upConfigFile)); err == nil {
		args = []string{"up", "--supervise", "--dir", f.dir} // as it was made
	}
	child, err := supervise.StartDetached(self, args, logPath)
	if err != nil {
		return failure(fmt.Errorf("up: %w", err))
	}
	p := startProgress(cmd, "the local network to start", 3*time.Minute)
	defer p.done()
	var running *upRunning
	err = child.Await(cmd.Context(), 3*time.Minute+10*time.Second, func(ctx context.Context) bool {
		rep, err := askSupervisor(ctx, f.dir, upRequest{Op: "status"})
		if err != nil {
			return false
		}
		if rep.Running.Ready {
			running = &rep.Running
			return true
		}
		for _, c := range rep.Running.Components {
			if !c.Running {
				p.set("waiting for " + c.Name)
				break
			}
		}
		return false
	})
	p.done()
	var exited *supervise.ExitedError
	switch {
	case errors.As(err, &exited):
		return failure(fmt.Errorf("up: the network did not start (%v); the end of %s:\n%s", exited.Err, logPath, supervise.LogTail(logPath, 15)))
	case errors.Is(err, supervise.ErrNotReady):
		return failure(fmt.Errorf("up: the network did not start within 3 minutes; see %s", logPath))
	case err != nil:
		return failure(errors.New("up: interrupted"))
	}
	printUpSummary(cmd.OutOrStdout(), f.dir, cfg, running, true)
	return nil
}

// printUpSummary prints what runs and the commands to go on with.
func printUpSummary(w io.Writer, dir string, cfg *upConfig, r *upRunning, detached bool) {
	me := selfName()
	df := dirFlag(dir)
	ledgerWhat := "the node's embedded ledger, 1 validator"
	if cfg.Validators > 0 {
		ledgerWhat = fmt.Sprintf("%d validators; the node records through v0", cfg.Validators)
	}
	fmt.Fprintf(w, "cloister up: a local network is running from %s/\n", strings.TrimSuffix(dir, "/"))
	fmt.Fprintf(w, "  node          %s   %s isolates; admission open: anyone who can reach 127.0.0.1 may create sessions\n", r.NodeURL, cfg.IsolateClass)
	fmt.Fprintf(w, "  platform key  %s\n", r.PlatformKey)
	fmt.Fprintf(w, "  ledger        %s    %s (%s)\n", r.LedgerURL, r.Origin, ledgerWhat)
	for _, c := range r.Components {
		if strings.HasPrefix(c.Name, "v") && c.Name != "v0" {
			fmt.Fprintf(w, "    %-11s %s\n", c.Name, c.URL)
		}
	}
	if r.BlobURL != "" {
		fmt.Fprintf(w, "  blob store    %s\n", r.BlobURL)
	}
	for _, c := range r.Components {
		if !c.Running {
			fmt.Fprintf(w, "  %-13s not running (%s); '%s up%s' starts it\n", c.Name, c.Exit, me, df)
		}
	}
	fmt.Fprintf(w, "  logs          %s\n", filepath.Join(dir, upLogDir)+"/")
	prog := "examples/psi-sum/psi-sum.wasm"
	if _, err := os.Stat(prog); err != nil {
		prog = "PROGRAM.wasm"
	}
	fmt.Fprintf(w, "next (README.md, \"Delegated computation\", goes on from here with four parties):\n")
	fmt.Fprintf(w, "  %s key new --out alice.key\n", me)
	fmt.Fprintf(w, "  %s policy new --out alice.json --node-data %s --principal alice.key \\\n", me, dir)
	fmt.Fprintf(w, "      --program alice:%s=%s --input alice:customers.csv --input alice:purchases.csv --output alice:result.json\n", filepath.Base(prog), prog)
	fmt.Fprintf(w, "  %s session create --node %s --policy alice.json\n", me, r.NodeURL)
	fmt.Fprintf(w, "  %s ledger verify --ledger %s\n", me, r.LedgerURL)
	if detached {
		fmt.Fprintf(w, "stop it with '%s down%s' (the state stays in %s; add --purge to remove it)\n", me, df, dir)
	} else {
		fmt.Fprintf(w, "stop it with Ctrl-C, or '%s down%s' from another terminal (the state stays in %s)\n", me, df, dir)
	}
}

func runDown(cmd *cobra.Command, dir string, names []string, purge bool) error {
	out := cmd.ErrOrStderr()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(out, "cloister down: nothing to stop: there is no %s\n", dir)
		return nil
	}
	cfgBytes, err := os.ReadFile(filepath.Join(dir, upConfigFile))
	if err != nil && !isEmptyUpDir(dir) {
		return failure(fmt.Errorf("down: %s was not made by 'cloister up' (it has no %s); leaving it alone", dir, upConfigFile))
	}
	var cfg upConfig
	json.Unmarshal(cfgBytes, &cfg)
	lock, free, err := supervise.LockDir(dir)
	if err != nil {
		return failure(fmt.Errorf("down: %w", err))
	}
	if free {
		lock.Close()
		if len(names) > 0 {
			return failure(fmt.Errorf("down: nothing runs from %s", dir))
		}
		if !purge {
			fmt.Fprintf(out, "cloister down: nothing runs from %s\n", dir)
			return nil
		}
	} else {
		ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
		defer cancel()
		what := "the local network to stop"
		if len(names) > 0 {
			what = strings.Join(names, ", ") + " to stop"
		}
		p := startProgress(cmd, what, 2*time.Minute)
		_, err := askSupervisor(ctx, dir, upRequest{Op: "stop", Names: names})
		if err != nil {
			p.done()
			return failure(fmt.Errorf("down: %w", err))
		}
		if len(names) > 0 {
			p.done()
			fmt.Fprintf(out, "cloister down: stopped %s; '%s up%s' starts %s again\n", strings.Join(names, ", "), selfName(), dirFlag(dir), map[bool]string{true: "it", false: "them"}[len(names) == 1])
			return nil
		}
		// Stopped once the supervisor lets go of the directory.
		if err := supervise.WaitUnlocked(ctx, dir); err != nil {
			p.done()
			return failure(fmt.Errorf("down: %s is still running after 2 minutes; see %s", dir, filepath.Join(dir, upLogDir)))
		}
		p.done()
		fmt.Fprintf(out, "cloister down: stopped the network of %s\n", dir)
	}
	if !purge {
		fmt.Fprintf(out, "cloister down: its state stays in %s: '%s up%s' starts it again; '%s down --purge%s' removes it\n", dir, selfName(), dirFlag(dir), selfName(), dirFlag(dir))
		return nil
	}
	return removeNetworkDir(out, "down", dir, cfg.Origin)
}

// removeNetworkDir removes a local network's directory and the ledger
// state 'cloister ledger verify' kept for its ledger (origin), saying so
// on out.
func removeNetworkDir(out io.Writer, cmdName, dir, origin string) error {
	if err := os.RemoveAll(dir); err != nil {
		return failure(fmt.Errorf("%s: removing %s: %w", cmdName, dir, err))
	}
	fmt.Fprintf(out, "cloister %s: removed %s\n", cmdName, dir)
	if origin != "" {
		if p, err := lclient.DefaultStatePath(origin); err == nil {
			if err := os.Remove(p); err == nil {
				fmt.Fprintf(out, "cloister %s: removed the ledger state kept for %s (%s)\n", cmdName, origin, p)
			}
		}
	}
	return nil
}

// isEmptyUpDir reports a directory 'up' made but never got to configure
// (only logs in it).
func isEmptyUpDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range entries {
		if e.Name() != upLogDir {
			return false
		}
	}
	return true
}
