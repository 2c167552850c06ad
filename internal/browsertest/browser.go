// Package browsertest starts the headless Chromium that tests of web
// pages (the console's) load pages in, and records every URL it requests.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"sync"
	"testing"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Chromium returns the path of Debian's chromium, or skips t when it is
// missing (fails it when CLOISTER_REQUIRE_BROWSER is set: scripts/test
// installs it).
func Chromium(t testing.TB) string {
	t.Helper()
	chrome, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CLOISTER_REQUIRE_BROWSER") != "" {
			t.Fatalf("chromium not found (scripts/test installs Debian's chromium): %v", err)
		}
		t.Skip("chromium not found: the browser checks are skipped (scripts/test installs it)")
	}
	return chrome
}

// Start starts chrome headless for t, until t ends, and returns its
// context and a function returning every URL it requested so far.
func Start(ctx context.Context, t testing.TB, chrome string) (context.Context, func() []string) {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chrome), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true), chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1000, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	var mu sync.Mutex
	var requested []string
	if err := chromedp.Listen(bctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			mu.Lock()
			requested = append(requested, e.Request.URL)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return bctx, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), requested...)
	}
}
