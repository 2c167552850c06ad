// Package registrytest starts a real OCI registry — Debian's
// docker-registry (distribution 2.8) — as a process on loopback for tests
// and benchmarks, and stops it when the test ends.
package registrytest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/loopback"
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
