package kubetest

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"

	"github.com/cloisterhq/cloister/internal/loopback"
)

// Options configure Start.
type Options struct {
	// Bin is the directory Binaries returned.
	Bin string
	// Etcd is the etcd binary (default: "etcd" on PATH, Debian's
	// etcd-server package).
	Etcd string
	// Controllers also starts kube-controller-manager and kube-scheduler.
	Controllers bool
	// Kubelets says real kubelets will heartbeat their nodes (StartNode):
	// the node lifecycle controller runs (it lifts a new node's not-ready
	// taint once the node reports Ready). Without it the controller is
	// off, so that a Node registered by hand is not tainted unreachable.
	Kubelets bool
	// Log receives every process's output.
	Log io.Writer
	// Timeout bounds the start (default 3 minutes).
	Timeout time.Duration
}

// Cluster is a running control plane.
type Cluster struct {
	// Dir holds its data, certificates and kubeconfig.
	Dir string
	// URL is the API server's https://127.0.0.1:PORT.
	URL string
	// Token is an administrator's bearer token (system:masters).
	Token string
	// Kubeconfig is a kubeconfig file for that administrator.
	Kubeconfig string
	// Config is a client configuration for that administrator.
	Config *rest.Config

	group
}

// group is a set of processes started together and stopped in reverse
// order.
type group struct {
	mu    sync.Mutex
	procs []*proc
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Start starts etcd and kube-apiserver (and, with Options.Controllers, the
// controller manager and scheduler) with their state under dir, and waits
// until the API server is ready. Stop ends them.
func Start(ctx context.Context, dir string, opts Options) (c *Cluster, err error) {
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	etcd := opts.Etcd
	if etcd == "" {
		if etcd, err = exec.LookPath("etcd"); err != nil {
			return nil, fmt.Errorf("etcd not found (Debian package etcd-server): %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	token := make([]byte, 16)
	rand.Read(token)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	started := &Cluster{Dir: dir, Token: hex.EncodeToString(token)}
	c = started
	defer func() {
		if err != nil {
			started.Stop()
		}
	}()
	ports, err := freePorts(5)
	if err != nil {
		return nil, err
	}
	etcdClient := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	etcdPeer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	if err := c.start(opts.Log, "etcd", etcd,
		"--name=kubetest", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls="+etcdClient, "--advertise-client-urls="+etcdClient,
		"--listen-peer-urls="+etcdPeer, "--initial-advertise-peer-urls="+etcdPeer,
		"--initial-cluster=kubetest="+etcdPeer, "--log-level=warn", "--logger=zap",
		"--quota-backend-bytes=1073741824"); err != nil {
		return nil, err
	}
	saKey, saPub, err := writeServiceAccountKeys(dir)
	if err != nil {
		return nil, err
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(c.Token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, err
	}
	c.URL = "https://127.0.0.1:" + strconv.Itoa(ports[2])
	certs := filepath.Join(dir, "certs")
	if err := c.start(opts.Log, "kube-apiserver", filepath.Join(opts.Bin, "kube-apiserver"),
		"--etcd-servers="+etcdClient, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(ports[2]), "--cert-dir="+certs,
		"--service-account-key-file="+saPub, "--service-account-signing-key-file="+saKey,
		"--service-account-issuer=https://kubernetes.default.svc", "--token-auth-file="+tokens,
		"--authorization-mode=Node,RBAC", "--service-cluster-ip-range=10.96.0.0/16",
		// No kube-proxy, no real endpoints: the default Service's
		// endpoints would name a loopback address, which is refused.
		"--endpoint-reconciler-type=none", "--profiling=false",
		"--enable-priority-and-fairness=false", "--v=0"); err != nil {
		return nil, err
	}
	c.Config = &rest.Config{Host: c.URL, BearerToken: c.Token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true}, QPS: 200, Burst: 400, Timeout: 30 * time.Second}
	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: kubetest, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: kubetest, context: {cluster: kubetest, user: admin}}]
current-context: kubetest
`, c.URL, c.Token)
	if err := os.WriteFile(c.Kubeconfig, []byte(kc), 0o600); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, "kube-apiserver", c.URL+"/readyz", true); err != nil {
		return nil, err
	}
	if !opts.Controllers {
		return c, nil
	}
	// Without kubelets no one heartbeats a registered node: the lifecycle
	// controller would taint it unreachable after 40 s.
	controllers := "--controllers=*,-node-lifecycle-controller"
	if opts.Kubelets {
		controllers = "--controllers=*"
	}
	if err := c.start(opts.Log, "kube-controller-manager", filepath.Join(opts.Bin, "kube-controller-manager"),
		"--kubeconfig="+c.Kubeconfig, "--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports[3]),
		"--service-account-private-key-file="+saKey, "--root-ca-file="+filepath.Join(certs, "apiserver.crt"),
		"--use-service-account-credentials=false", controllers,
		"--v=0"); err != nil {
		return nil, err
	}
	if err := c.start(opts.Log, "kube-scheduler", filepath.Join(opts.Bin, "kube-scheduler"),
		"--kubeconfig="+c.Kubeconfig, "--leader-elect=false",
		"--bind-address=127.0.0.1", "--secure-port="+strconv.Itoa(ports[4]), "--v=0"); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, "kube-controller-manager", "https://127.0.0.1:"+strconv.Itoa(ports[3])+"/healthz", false); err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx, "kube-scheduler", "https://127.0.0.1:"+strconv.Itoa(ports[4])+"/healthz", false); err != nil {
		return nil, err
	}
	return c, nil
}

// freePorts picks n distinct loopback ports below the ephemeral range.
func freePorts(n int) ([]int, error) {
	addrs, err := loopback.Addrs(n)
	if err != nil {
		return nil, err
	}
	ports := make([]int, n)
	for i, a := range addrs {
		_, p, _ := net.SplitHostPort(a)
		ports[i], _ = strconv.Atoi(p)
	}
	return ports, nil
}

func (c *Cluster) start(log io.Writer, name, bin string, args ...string) error {
	return c.group.start(c.Dir, log, name, bin, args...)
}

func (g *group) start(dir string, log io.Writer, name, bin string, args ...string) error {
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	w := &prefixWriter{w: log, prefix: name + ": "}
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	return nil
}

// waitReady polls url until it answers 200, failing at once if a process
// of the cluster exits.
func (c *Cluster) waitReady(ctx context.Context, name, url string, auth bool) error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	defer hc.CloseIdleConnections()
	var last string
	for {
		if err := c.exited(); err != nil {
			return fmt.Errorf("waiting for %s: %w", name, err)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+c.Token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w (last answer: %s)", name, url, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// exited reports a process of the group that has ended.
func (g *group) exited() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.procs {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited: %v", p.name, p.err)
		default:
		}
	}
	return nil
}

// Check reports whether every process of the cluster is still running.
func (c *Cluster) Check() error { return c.exited() }

// Stop ends every process in reverse order of start, each by its own id,
// and waits for it.
func (c *Cluster) Stop() { c.group.stop() }

func (g *group) stop() {
	g.mu.Lock()
	procs := g.procs
	g.procs = nil
	g.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
}

func writeServiceAccountKeys(dir string) (keyFile, pubFile string, err error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return "", "", err
	}
	keyFile, pubFile = filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	return keyFile, pubFile, errors.Join(
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600),
		os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644))
}

// prefixWriter prefixes every line with the process's name.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		fmt.Fprintf(p.w, "%s%s\n", p.prefix, p.buf[:i])
		p.buf = p.buf[i+1:]
	}
	return len(b), nil
}
