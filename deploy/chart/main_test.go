package chart

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/deploy/internal/kubetest"
)

var (
	clusterOnce sync.Once
	cluster     *kubetest.Cluster
	clusterErr  error
	clusterDir  string
)

// apiServer returns the control plane shared by this package's tests,
// starting it on first use: Kubernetes binaries from the cache (built
// there if missing), Debian's etcd, all on loopback.
func apiServer(t *testing.T) *kubetest.Cluster {
	t.Helper()
	clusterOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 45*time.Minute)
		defer cancel()
		bin, err := kubetest.Binaries(ctx, filepath.Join("..", "kube"), os.Stderr)
		if err != nil {
			clusterErr = err
			return
		}
		start := time.Now()
		cluster, clusterErr = kubetest.Start(ctx, clusterDir, kubetest.Options{Bin: bin, Controllers: true, Log: clusterLog})
		if clusterErr == nil {
			fmt.Fprintf(os.Stderr, "kubetest: control plane ready in %s (%s)\n", time.Since(start).Round(time.Millisecond), cluster.URL)
		}
	})
	if clusterErr != nil {
		t.Fatalf("starting the control plane: %v", clusterErr)
	}
	return cluster
}

var clusterLog = &lineLog{}

// lineLog keeps the control plane's output, printed only if a test failed.
type lineLog struct {
	mu  sync.Mutex
	buf []byte
}

func (l *lineLog) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) < 8<<20 {
		l.buf = append(l.buf, b...)
	}
	return len(b), nil
}

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "cloister-kubetest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	clusterDir = dir
	code := m.Run()
	if cluster != nil {
		cluster.Stop()
	}
	if code != 0 && len(clusterLog.buf) > 0 {
		tail := clusterLog.buf[max(0, len(clusterLog.buf)-16<<10):]
		fmt.Fprintf(os.Stderr, "--- control plane output (last 16 KiB) ---\n%s\n", tail)
	}
	os.RemoveAll(dir)
	os.Exit(code)
}
