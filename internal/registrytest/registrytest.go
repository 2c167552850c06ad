// Package registrytest starts, for tests and benchmarks, the two kinds of
// store blobs live in, on loopback until the test ends: a real OCI
// registry — Debian's docker-registry (distribution 2.8) — as a process,
// and a Cloister store (package blob/server) in the test's process.
package registrytest

import (
	"crypto/ed25519"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/blob/server"
	"github.com/cloisterhq/cloister/internal/loopback"
	"github.com/cloisterhq/cloister/keys"
)

// Binary is the registry's executable, from the Debian package
// docker-registry (scripts/test installs it).
const Binary = "docker-registry"

// Registry is a running registry.
type Registry struct {
	URL string // "http://127.0.0.1:PORT"
	Pid int    // its process, for benchmarks that count its CPU time
}

// Start runs a registry with filesystem storage in a temporary directory
// and returns its base URL ("http://127.0.0.1:PORT"). It skips the test if
// the registry is not installed.
func Start(tb testing.TB) string {
	tb.Helper()
	return Run(tb).URL
}

// Run is Start, returning the process too.
func Run(tb testing.TB) *Registry {
	tb.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		if _, err := os.Stat("/usr/bin/" + Binary); err != nil {
			tb.Skip("docker-registry not installed (Debian package docker-registry; scripts/test installs it)")
		}
		bin = "/usr/bin/" + Binary
	}
	dir := tb.TempDir()
	ln, err := loopback.Listen()
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
http:
  addr: %s
`, filepath.Join(dir, "data"), addr)
	cfgPath := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		tb.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "registry.log"))
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	tb.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	url := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return &Registry{URL: url, Pid: cmd.Process.Pid}
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			tb.Fatalf("docker-registry exited at start:\n%s", log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "registry.log"))
			tb.Fatalf("docker-registry did not answer on %s within 20s:\n%s", url, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Store is a Cloister blob store (package blob/server) served on loopback.
type Store struct {
	URL    string             // "http://127.0.0.1:PORT"
	Dir    string             // its data directory
	Key    ed25519.PrivateKey // a key allowed to push
	Server *server.Server
}

// StartStore serves a Cloister store on loopback, through the connection
// bounds of package httpguard as `cloister node --blob-listen` serves it,
// until the test ends. opts.Dir defaults to a temporary directory, and a
// fresh key (Store.Key) is added to opts.Pushers with the default quota.
func StartStore(tb testing.TB, opts server.Options) *Store {
	tb.Helper()
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	pushers := map[string]int64{keys.FormatSigningKey(key.Public().(ed25519.PublicKey)): 0}
	for k, q := range opts.Pushers {
		pushers[k] = q
	}
	opts.Pushers = pushers
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	srv, err := server.New(opts)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		tb.Fatal(err)
	}
	hs, _ := srv.Serve(ln)
	tb.Cleanup(func() { hs.Close(); srv.Close() })
	return &Store{URL: "http://" + ln.Addr().String(), Dir: opts.Dir, Key: key, Server: srv}
}
