package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cloisterhq/cloister/internal/supervise"
	"github.com/cloisterhq/cloister/internal/testnet"
)

// 'cloister testnet' runs a test network from one command (package
// internal/testnet), supervised by this process or, with --detach, by one
// in the background; DIR/testnet.sock is the supervisor's control socket
// (status, stop) while it runs, and the supervisor holds the lock on DIR.

const (
	defaultTestnetDir = "cloister-testnet"
	testnetSocket     = "testnet.sock"
)

type testnetFlags struct {
	dir         string
	validators  int
	nodes       int
	classes     []string
	brokers     int
	noBlobStore bool
	noDispatch  bool
	listings    []string
	offerTTL    time.Duration
	asJSON      bool
	detach      bool
	child       bool
}

// testnetRequest and testnetReply are the control socket's protocol.
type testnetRequest struct {
	Op string `json:"op"` // status, stop
}

type testnetReply struct {
	OK    bool          `json:"ok"`
	Error string        `json:"error,omitempty"`
	Ready bool          `json:"ready"`
	Info  *testnet.Info `json:"info,omitempty"`
	// Running lists the components whose processes run.
	Running []string `json:"running,omitempty"`
}

func newTestnetCmd() *cobra.Command {
	var f testnetFlags
	defaultClasses := "software"
	if testnet.SwtpmInstalled() {
		defaultClasses = "software,tpm"
	}
	cmd := &cobra.Command{
		Use:   "testnet [--dir DIR] [--validators N] [--nodes M] [--classes C,...] [--brokers K] [--json] [--detach]",
		Short: "Run a test network on loopback: validators, provider nodes, key brokers and a blob store, each a process",
		Long: `testnet lays out, on this machine, a network of separate processes on free
loopback ports, all of its state under DIR (default ./cloister-testnet, which
must be new or empty):

  - N validators of a new ledger (--validators, default 1);
  - M provider nodes (--nodes, default 2) whose isolate classes cycle through
    --classes (tpm nodes are attested by a private swtpm started for each),
    with limits and prices that differ from node to node; each is run by
    an organisation (org1, org2, …) that validator v0 admits to the
    consortium, registers with its endpoint and organisation on the ledger
    and offers its capacity there, renewed every third of --offer-ttl;
  - K key brokers (--brokers, default 1) recording on the ledger;
  - a blob store that the organisations and DIR/keys/innovator.key may
    push to;
  - a dispatcher ('cloister dispatch', decision 0113) signing with
    DIR/keys/dispatcher.key, serving the program listings given with
    --listing (an innovator's delegation names that key).

It returns control once every component answers and every node's offer is
live on the ledger, and prints what it started: URLs, keys' paths, data
directories and PIDs (--json: as JSON, the same as DIR/testnet.json). Then it
runs until Ctrl-C or SIGTERM, which stop every component cleanly: dispatchers
and nodes first, the validators last. With --detach it runs in the background (its
own output in DIR/logs/testnet.log) and 'cloister testnet down' stops it.

A test network is throwaway: every start makes a new one (a ledger with a
chain id of its own); 'cloister testnet down --purge' removes the
directory. The nodes admit anyone who reaches 127.0.0.1 (admission open).

Exit status: 0 stopped by a signal or by 'testnet down' (with --detach:
running); 1 a component could not start (the end of its log is printed);
2 bad usage.`,
		Example: `  cloister testnet
  cloister testnet --detach --json > net.json && cloister testnet down --purge
  cloister testnet --validators 4 --nodes 3 --classes software,tpm --brokers 3 --dir ./net`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runTestnet(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", defaultTestnetDir, "directory holding the network's state and logs (new or empty)")
	fl.IntVar(&f.validators, "validators", 1, "number of validators (1 to 16)")
	fl.IntVar(&f.nodes, "nodes", 2, "number of provider nodes (0 to 32)")
	fl.StringSliceVar(&f.classes, "classes", strings.Split(defaultClasses, ","), "isolate classes the nodes cycle through: software, tpm (tpm needs swtpm)")
	fl.IntVar(&f.brokers, "brokers", 1, "number of key brokers (0 to 16)")
	fl.BoolVar(&f.noBlobStore, "no-blob-store", false, "run no blob store")
	fl.BoolVar(&f.noDispatch, "no-dispatcher", false, "run no dispatcher")
	fl.StringArrayVar(&f.listings, "listing", nil, "a sealed program's listing for the dispatcher (JSON, as 'cloister dispatch --program' takes; repeatable)")
	fl.DurationVar(&f.offerTTL, "offer-ttl", 30*time.Second, "how long each node's offer lives (3s to 10m); nodes renew it every third of that")
	fl.BoolVar(&f.asJSON, "json", false, "print what was started as JSON")
	fl.BoolVarP(&f.detach, "detach", "d", false, "run in the background; 'cloister testnet down' stops it")
	fl.BoolVar(&f.child, "supervise", false, "run as the detached supervisor (internal)")
	fl.MarkHidden("supervise")
	cmd.AddCommand(newTestnetStatusCmd(), newTestnetDownCmd())
	return cmd
}

func (f *testnetFlags) options(self string, out io.Writer) (testnet.Options, error) {
	if f.validators < 1 || f.validators > 16 {
		return testnet.Options{}, usageError("testnet: --validators %d: want 1 to 16", f.validators)
	}
	if f.nodes < 0 || f.nodes > 32 {
		return testnet.Options{}, usageError("testnet: --nodes %d: want 0 to 32", f.nodes)
	}
	if f.brokers < 0 || f.brokers > 16 {
		return testnet.Options{}, usageError("testnet: --brokers %d: want 0 to 16", f.brokers)
	}
	if f.offerTTL < 3*time.Second || f.offerTTL > 600*time.Second {
		return testnet.Options{}, usageError("testnet: --offer-ttl %s: want 3s to 10m", f.offerTTL)
	}
	if len(f.classes) == 0 {
		return testnet.Options{}, usageError("testnet: --classes: name at least one class")
	}
	for _, c := range f.classes {
		switch c {
		case "software":
		case "tpm":
			if !testnet.SwtpmInstalled() {
				return testnet.Options{}, usageError("testnet: --classes tpm needs swtpm (the Debian package swtpm); install it or use --classes software")
			}
		default:
			return testnet.Options{}, usageError("testnet: --classes %q: want software or tpm", c)
		}
	}
	nodes := testnet.Nodes(f.nodes, f.classes)
	return testnet.Options{Dir: f.dir, Bin: self, Validators: f.validators, Nodes: nodes, Brokers: f.brokers, NoBroker: f.brokers == 0,
		NoBlobStore: f.noBlobStore, NoDispatcher: f.noDispatch, Listings: f.listings, OfferTTL: f.offerTTL, Out: out}, nil
}

func runTestnet(cmd *cobra.Command, f *testnetFlags) error {
	self, err := os.Executable()
	if err != nil {
		return failure(fmt.Errorf("testnet: %w", err))
	}
	opts, err := f.options(self, cmd.ErrOrStderr())
	if err != nil {
		return err
	}
	if l, free, err := supervise.LockDir(f.dir); err == nil && !free {
		return failure(fmt.Errorf("testnet: a test network runs from %s: 'cloister testnet status%s' shows it", f.dir, testnetDirFlag(f.dir)))
	} else if err == nil {
		l.Close()
	}
	if err := checkNewTestnetDir(f.dir); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(f.dir, "logs"), 0o700); err != nil {
		return failure(fmt.Errorf("testnet: %w", err))
	}
	lock, free, err := supervise.LockDir(f.dir)
	if err != nil {
		return failure(fmt.Errorf("testnet: %w", err))
	}
	if !free {
		return failure(fmt.Errorf("testnet: a test network runs from %s: 'cloister testnet status%s' shows it", f.dir, testnetDirFlag(f.dir)))
	}
	if f.detach && !f.child {
		lock.Close()
		return detachTestnet(cmd, f)
	}
	defer lock.Close()
	return superviseTestnet(cmd, f, opts)
}

// checkNewTestnetDir refuses a directory that holds anything but logs.
func checkNewTestnetDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return failure(fmt.Errorf("testnet: %w", err))
	}
	for _, e := range entries {
		if e.Name() == testnet.InfoFile {
			return usageError("testnet: %s holds a test network already; a test network starts anew each time: 'cloister testnet down --purge%s' removes it (or choose another --dir)", dir, testnetDirFlag(dir))
		}
	}
	for _, e := range entries {
		if e.Name() != "logs" {
			return usageError("testnet: %s is not empty and holds no test network; choose another --dir", dir)
		}
	}
	return nil
}

func testnetDirFlag(dir string) string {
	if dir == defaultTestnetDir {
		return ""
	}
	return " --dir " + dir
}

// superviseTestnet starts the network in this process, serves the control
// socket, and stops everything at a signal or a stop request.
func superviseTestnet(cmd *cobra.Command, f *testnetFlags, opts testnet.Options) error {
	ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := startProgress(cmd, "the test network to start", 0)
	nw, err := testnet.Start(ctx, opts)
	p.done()
	if err != nil {
		return failure(err)
	}
	defer nw.Stop()
	// The control socket, once everything is ready (the directory must
	// be empty of anything but logs when the network starts).
	sock := filepath.Join(f.dir, testnetSocket)
	ln, err := supervise.Listen(sock)
	if err != nil {
		return failure(fmt.Errorf("testnet: control socket: %w", err))
	}
	defer os.Remove(sock)
	defer ln.Close()
	stopReq := make(chan struct{})
	var once sync.Once
	sctx, cancelServe := context.WithCancel(context.Background())
	defer cancelServe()
	go supervise.Serve(sctx, ln, func(raw json.RawMessage) (any, func()) {
		var req testnetRequest
		if err := json.Unmarshal(raw, &req); err != nil {
			return testnetReply{Error: "malformed request"}, nil
		}
		info := nw.Info()
		rep := testnetReply{OK: true, Ready: true, Info: &info}
		for _, name := range nw.Names() {
			if nw.Running(name) {
				rep.Running = append(rep.Running, name)
			}
		}
		switch req.Op {
		case "status":
			return rep, nil
		case "stop":
			return rep, func() { once.Do(func() { close(stopReq) }) }
		default:
			return testnetReply{Error: fmt.Sprintf("unknown request %q", req.Op)}, nil
		}
	})
	info := nw.Info()
	switch {
	case f.child:
		fmt.Fprintf(cmd.ErrOrStderr(), "cloister testnet: ready; supervisor pid %d\n", os.Getpid())
	case f.asJSON:
		if err := printJSON(cmd.OutOrStdout(), info); err != nil {
			return err
		}
	default:
		printTestnetSummary(cmd.OutOrStdout(), f.dir, &info, false)
	}
	select {
	case <-ctx.Done():
		fmt.Fprintf(cmd.ErrOrStderr(), "\ncloister testnet: stopping (dispatchers and nodes first)…\n")
	case <-stopReq:
		fmt.Fprintf(cmd.ErrOrStderr(), "cloister testnet: stopping, as 'cloister testnet down' asked (dispatchers and nodes first)…\n")
	}
	nw.Stop()
	fmt.Fprintf(cmd.ErrOrStderr(), "cloister testnet: stopped. Its state stays in %s; 'cloister testnet down --purge%s' removes it.\n", f.dir, testnetDirFlag(f.dir))
	return nil
}

// detachTestnet starts the supervisor in the background, waits until the
// network is ready or the supervisor fails, and prints what runs.
func detachTestnet(cmd *cobra.Command, f *testnetFlags) error {
	self, err := os.Executable()
	if err != nil {
		return failure(fmt.Errorf("testnet: %w", err))
	}
	logPath := filepath.Join(f.dir, "logs", "testnet.log")
	args := []string{"testnet", "--supervise", "--detach", "--dir", f.dir, "--validators", strconv.Itoa(f.validators),
		"--nodes", strconv.Itoa(f.nodes), "--classes", strings.Join(f.classes, ","), "--brokers", strconv.Itoa(f.brokers),
		"--offer-ttl", f.offerTTL.String()}
	if f.noBlobStore {
		args = append(args, "--no-blob-store")
	}
	if f.noDispatch {
		args = append(args, "--no-dispatcher")
	}
	for _, l := range f.listings {
		args = append(args, "--listing", l)
	}
	child, err := supervise.StartDetached(self, args, logPath)
	if err != nil {
		return failure(fmt.Errorf("testnet: %w", err))
	}
	const bound = 5 * time.Minute
	p := startProgress(cmd, "the test network to start", bound)
	defer p.done()
	var info *testnet.Info
	err = child.Await(cmd.Context(), bound, func(ctx context.Context) bool {
		rep, err := askTestnet(ctx, f.dir, "status")
		if err == nil && rep.Ready && rep.Info != nil {
			info = rep.Info
			return true
		}
		return false
	})
	p.done()
	var exited *supervise.ExitedError
	switch {
	case errors.As(err, &exited):
		return failure(fmt.Errorf("testnet: the network did not start (%v); the end of %s:\n%s", exited.Err, logPath, supervise.LogTail(logPath, 15)))
	case errors.Is(err, supervise.ErrNotReady):
		return failure(fmt.Errorf("testnet: the network did not start within %s; see %s ('cloister testnet down%s' stops what runs)", bound, logPath, testnetDirFlag(f.dir)))
	case err != nil:
		return failure(errors.New("testnet: interrupted"))
	}
	if f.asJSON {
		return printJSON(cmd.OutOrStdout(), info)
	}
	printTestnetSummary(cmd.OutOrStdout(), f.dir, info, true)
	return nil
}

func askTestnet(ctx context.Context, dir, op string) (*testnetReply, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var rep testnetReply
	if err := supervise.Ask(ctx, filepath.Join(dir, testnetSocket), testnetRequest{Op: op}, &rep); err != nil {
		return nil, err
	}
	if !rep.OK {
		return &rep, errors.New(rep.Error)
	}
	return &rep, nil
}

// printTestnetSummary prints what runs and how to go on.
func printTestnetSummary(w io.Writer, dir string, info *testnet.Info, detached bool) {
	me := selfName()
	df := testnetDirFlag(dir)
	fmt.Fprintf(w, "cloister testnet: a test network is running from %s/\n", info.Dir)
	fmt.Fprintf(w, "  ledger        %s   %s (%d validator%s)\n", info.LedgerURL, info.Origin, len(info.Validators), plural(len(info.Validators)))
	for _, v := range info.Validators {
		fmt.Fprintf(w, "    %-11s %-28s pid %-7d home %s\n", v.Name, v.URL, v.PID, v.Home)
	}
	for _, o := range info.Organisations {
		fmt.Fprintf(w, "  organisation  %-6s %s   key %s (member, entry %d)\n", o.Name, o.Key, o.KeyFile, o.Member)
	}
	for _, n := range info.Nodes {
		price := n.Price
		if price == "" {
			price = "-"
		}
		fmt.Fprintf(w, "  node %-8s %-28s pid %-7d %s, %s; offers %s, cores %d, runs %d, price %s, %s\n", n.Name, n.URL, n.PID, n.Class, n.Organisation,
			n.Memory, n.Cores, n.Concurrency, price, strings.Join(n.Regions, ","))
		fmt.Fprintf(w, "    %-11s %s   data %s\n", "", n.PlatformKey, n.Data)
		if n.Console != "" {
			fmt.Fprintf(w, "    %-11s console %s\n", "", n.Console)
		}
	}
	for _, b := range info.Brokers {
		fmt.Fprintf(w, "  broker %-6s %-28s pid %-7d %s   data %s\n", b.Name, b.URL, b.PID, b.SigningKey, b.Data)
	}
	if info.BlobStore != nil {
		fmt.Fprintf(w, "  blob store    %-28s pid %-7d data %s\n", info.BlobStore.URL, info.BlobStore.PID, info.BlobStore.Data)
	}
	for _, d := range info.Dispatchers {
		fmt.Fprintf(w, "  dispatcher %-2s %-28s pid %-7d %s   %d listing%s\n", d.Name, d.URL, d.PID, d.Key, len(d.Listings), plural(len(d.Listings)))
	}
	fmt.Fprintf(w, "  keys          innovator %s, consumer %s, dispatcher %s\n", info.Keys["innovator"], info.Keys["consumer"], info.Keys["dispatcher"])
	fmt.Fprintf(w, "  logs          %s/\n", filepath.Join(info.Dir, "logs"))
	fmt.Fprintf(w, "next (docs/testnet.md):\n")
	fmt.Fprintf(w, "  %s offer list --ledger %s\n", me, info.LedgerURL)
	fmt.Fprintf(w, "  %s ledger verify --ledger %s\n", me, info.LedgerURL)
	if detached {
		fmt.Fprintf(w, "stop it with '%s testnet down%s' (add --purge to remove %s)\n", me, df, dir)
	} else {
		fmt.Fprintf(w, "stop it with Ctrl-C, or '%s testnet down%s' from another terminal\n", me, df)
	}
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func newTestnetStatusCmd() *cobra.Command {
	var dir string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status [--dir DIR] [--json]",
		Short: "Show what a running test network runs",
		Long: `status asks the supervisor of the test network in DIR (default
./cloister-testnet) what runs: the same as 'cloister testnet' printed, and
which components' processes run now.

Exit status: 0 it runs; 1 nothing runs from DIR; 2 bad usage.`,
		Example: `  cloister testnet status --json`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := askTestnet(cmd.Context(), dir, "status")
			if err != nil || rep.Info == nil {
				return failure(fmt.Errorf("testnet status: no test network runs from %s", dir))
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			printTestnetSummary(cmd.OutOrStdout(), dir, rep.Info, true)
			fmt.Fprintf(cmd.OutOrStdout(), "running: %s\n", strings.Join(rep.Running, " "))
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", defaultTestnetDir, "directory of the network ('cloister testnet --dir')")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the answer as JSON")
	return cmd
}

func newTestnetDownCmd() *cobra.Command {
	var dir string
	var purge bool
	cmd := &cobra.Command{
		Use:   "down [DIR] [--purge]",
		Short: "Stop a test network, and optionally remove it",
		Long: `down asks the supervisor of the test network in DIR (default
./cloister-testnet; also --dir) to stop every component — dispatchers and nodes first,
the validators last — and waits until it has. --purge then removes DIR and
the ledger state 'cloister ledger verify' kept for its ledger; it refuses a
directory that 'cloister testnet' did not make.

Exit status: 0 stopped (or nothing ran); 1 it could not be stopped or
removed; 2 bad usage.`,
		Example: `  cloister testnet down
  cloister testnet down ./net --purge`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				if cmd.Flags().Changed("dir") && args[0] != dir {
					return usageError("testnet down: DIR %q and --dir %q differ", args[0], dir)
				}
				dir = args[0]
			}
			return runTestnetDown(cmd, dir, purge)
		},
	}
	cmd.Flags().StringVar(&dir, "dir", defaultTestnetDir, "directory of the network ('cloister testnet --dir')")
	cmd.Flags().BoolVar(&purge, "purge", false, "also remove the directory and the ledger state kept for it")
	return cmd
}

func runTestnetDown(cmd *cobra.Command, dir string, purge bool) error {
	out := cmd.ErrOrStderr()
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(out, "cloister testnet down: nothing to stop: there is no %s\n", dir)
		return nil
	}
	_, infoErr := os.Stat(filepath.Join(dir, testnet.InfoFile))
	if infoErr != nil && checkNewTestnetDir(dir) != nil {
		return failure(fmt.Errorf("testnet down: %s was not made by 'cloister testnet' (it has no %s); leaving it alone", dir, testnet.InfoFile))
	}
	lock, free, err := supervise.LockDir(dir)
	if err != nil {
		return failure(fmt.Errorf("testnet down: %w", err))
	}
	if free {
		lock.Close()
		fmt.Fprintf(out, "cloister testnet down: nothing runs from %s\n", dir)
	} else {
		ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Minute)
		defer cancel()
		p := startProgress(cmd, "the test network to stop", 3*time.Minute)
		_, err := askTestnet(ctx, dir, "stop")
		if err == nil {
			err = supervise.WaitUnlocked(ctx, dir)
		}
		p.done()
		if err != nil {
			return failure(fmt.Errorf("testnet down: %s did not stop: %v; see %s", dir, err, filepath.Join(dir, "logs")))
		}
		fmt.Fprintf(out, "cloister testnet down: stopped the test network of %s\n", dir)
	}
	if !purge {
		return nil
	}
	var info testnet.Info
	if b, err := os.ReadFile(filepath.Join(dir, testnet.InfoFile)); err == nil {
		json.Unmarshal(b, &info)
	}
	return removeNetworkDir(out, "testnet down", dir, info.Origin)
}
