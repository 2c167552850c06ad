package kubetest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Components are the commands deploy/kube builds, one directory each.
var Components = []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}

// Binaries returns the directory holding the Kubernetes binaries built from
// kubeModule (deploy/kube), building them first if the cache lacks them.
// Concurrent callers wait for one build (a lock file in the cache). The
// build's output goes to log.
func Binaries(ctx context.Context, kubeModule string, log io.Writer) (string, error) {
	version, key, err := buildKey(kubeModule)
	if err != nil {
		return "", err
	}
	root, err := CacheRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, version+"-"+key)
	if complete(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if complete(dir) {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(root, ".build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	start := time.Now()
	fmt.Fprintf(log, "kubetest: building Kubernetes %s into %s (once per version; about 15-25 min of 2 cores cold)\n", version, dir)
	args := []string{"build", "-trimpath", "-o", tmp + "/"}
	for _, c := range Components {
		args = append(args, "./"+c)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = kubeModule
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building Kubernetes %s in %s: %w", version, kubeModule, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	fmt.Fprintf(log, "kubetest: built Kubernetes %s in %s\n", version, time.Since(start).Round(time.Second))
	return dir, nil
}

func complete(dir string) bool {
	for _, c := range Components {
		if fi, err := os.Stat(filepath.Join(dir, c)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// CacheRoot is where built binaries are kept, one directory per build key.
func CacheRoot() (string, error) {
	if d := os.Getenv("CLOISTER_KUBE_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "cloister", "kube"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: set CLOISTER_KUBE_CACHE: %w", err)
	}
	return filepath.Join(home, ".cache", "cloister", "kube"), nil
}

// buildKey reads the Kubernetes version from the module's go.mod and hashes
// every input of the build.
func buildKey(mod string) (version, key string, err error) {
	gomod, err := os.ReadFile(filepath.Join(mod, "go.mod"))
	if err != nil {
		return "", "", err
	}
	sc := bufio.NewScanner(strings.NewReader(string(gomod)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && (f[0] == "k8s.io/kubernetes" || (f[0] == "require" && len(f) >= 3 && f[1] == "k8s.io/kubernetes")) {
			version = f[len(f)-1]
		}
	}
	if version == "" {
		return "", "", fmt.Errorf("%s/go.mod does not require k8s.io/kubernetes", mod)
	}
	var files []string
	err = filepath.WalkDir(mod, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(p, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", "", err
	}
	sort.Strings(files)
	h := sha256.New()
	goVersion, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOVERSION: %w", err)
	}
	fmt.Fprintf(h, "%s %s/%s\n", strings.TrimSpace(string(goVersion)), runtime.GOOS, runtime.GOARCH)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", "", err
		}
		rel, _ := filepath.Rel(mod, f)
		fmt.Fprintf(h, "%s %d\n", rel, len(b))
		h.Write(b)
	}
	return version, hex.EncodeToString(h.Sum(nil))[:12], nil
}
