package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/cloisterhq/cloister/console"
	"github.com/cloisterhq/cloister/internal/httpguard"
	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/node"
)

// serveConsole serves n's console on addr (plain HTTP, under the shared
// listener guard) until the returned stop is called. lc reads the ledger
// the node records on (nil: none); sections are pages capabilities add.
// It returns the console's base URL.
func serveConsole(ctx context.Context, addr string, n *node.Node, lc *lclient.Client, hosts []string, log *slog.Logger, sections ...console.Section) (string, func(), error) {
	cs, err := console.New(console.Options{Node: n, Ledger: lc, Hosts: hosts, Logger: log, Sections: sections})
	if err != nil {
		return "", nil, err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("console: listening on %s: %w", addr, err)
	}
	cs.AllowHost(ln.Addr().String())
	cctx, cancel := context.WithCancel(context.Background())
	go cs.Run(cctx)
	srv := httpguard.NewServer(cs.Handler(), httpguard.Limits{}, nil, slog.NewLogLogger(log.Handler(), slog.LevelDebug))
	go srv.Serve(httpguard.Listen(ln, httpguard.Limits{}, nil))
	url := "http://" + ln.Addr().String()
	log.Info("console listening", "url", url+"/ui/")
	return url, func() {
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		srv.Shutdown(sctx)
		scancel()
		cancel()
	}, nil
}

// checkConsoleAddr refuses a console address beyond loopback unless the
// operator said the console is public.
func checkConsoleAddr(addr string, public bool) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("--console %q: %v", addr, err)
	}
	if public {
		return nil
	}
	if err := checkLoopback(addr); err != nil {
		return fmt.Errorf("--console %q is not a loopback address: everything the console shows (sessions, policies, the ledger; never data or secrets) would be visible to whoever reaches it; add --console-public to mean it", addr)
	}
	return nil
}
