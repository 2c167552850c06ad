package kubetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The node's addresses. They exist only inside the node's own network
// namespace, so they cannot collide with the host's networks or with
// another test's node.
const (
	// NodeIP is the kubelet's address (on the namespace's loopback
	// device: a kubelet refuses a loopback address as its node IP).
	NodeIP = "10.213.1.1"
	// PodSubnet is the CNI bridge's subnet; pods get addresses in it.
	PodSubnet = "10.213.0.0/24"
	// cniBridge is the bridge the CNI plugin makes for the pods.
	cniBridge = "kubetest0"
	// apiPort is where the namespace's forwarder to the API server listens.
	apiPort = 6443
)

// unpacked matches ctr's line for each image it imported: name, digest.
var unpacked = regexp.MustCompile(`unpacking ([^ @]+:[^ @]+) \((sha256:[0-9a-f]{64})\)`)

// cniBinDir is where Debian's containernetworking-plugins installs the
// bridge, host-local and loopback plugins.
const cniBinDir = "/usr/lib/cni"

// kernelTunables are the global sysctls a kubelet (1.37,
// pkg/kubelet/cm/container_manager_linux.go setupKernelTunables) sets on
// the host at start, with the values it wants. The node shows the kubelet
// files holding these values in place of /proc/sys, in its own mount
// namespace, and runs it with protectKernelDefaults: it checks, finds what
// it wants, and writes nothing.
var kernelTunables = map[string]string{
	"vm/overcommit_memory":      "1",
	"vm/panic_on_oom":           "0",
	"kernel/panic":              "10",
	"kernel/panic_on_oops":      "1",
	"kernel/keys/root_maxkeys":  "1000000",
	"kernel/keys/root_maxbytes": "25000000",
}

// NodeOptions configure StartNode.
type NodeOptions struct {
	// Bin is the directory Binaries returned (it holds the kubelet).
	Bin string
	// Name is the node's name (default "kubetest-kubelet").
	Name string
	// Images are OCI archives imported into containerd before the kubelet
	// starts (nothing is pulled: no registry is reachable).
	Images []string
	// SandboxImage names the pod sandbox ("pause") image, one of Images.
	SandboxImage string
	// Log receives every process's output.
	Log io.Writer
	// Timeout bounds the start, until the node is Ready (default 3 minutes).
	Timeout time.Duration
	// Debug makes containerd (and its shims and runc) log at debug level.
	Debug bool
}

// Node is a kubelet with a containerd of its own, registered with a
// Cluster. Both run in a network and a mount namespace made for the node,
// with their state under Dir and their cgroups under CgroupRoot; Stop
// removes all of it.
type Node struct {
	Name string
	// Dir holds containerd's and the kubelet's state and configuration.
	Dir string
	// CgroupRoot is the kubelet's cgroup root, in every hierarchy.
	CgroupRoot string

	group
	holder *exec.Cmd
	held   chan struct{}
	fwd    net.Listener
}

// StartNode starts containerd and a kubelet registered with c, with their
// state under dir, and waits until the node is Ready.
//
// What it changes outside dir, and undoes in Stop: a network namespace
// (loopback, the node's address, the CNI bridge, the pods' veth pairs, any
// iptables rules — all gone with the namespace), a mount namespace (tmpfs
// over /run, /var/lib and /var/log for containerd's and CNI's fixed paths,
// the sysctl files, volume and root file system mounts — gone with it),
// and cgroups under CgroupRoot in every hierarchy (removed).
func StartNode(ctx context.Context, c *Cluster, dir string, opts NodeOptions) (n *Node, err error) {
	if opts.Timeout == 0 {
		opts.Timeout = 3 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Name == "" {
		opts.Name = "kubetest-kubelet"
	}
	for _, tool := range []string{"containerd", "ctr", "runc", "unshare", "nsenter", "ip", cniBinDir + "/bridge", cniBinDir + "/host-local", cniBinDir + "/loopback"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found (Debian packages containerd, runc, containernetworking-plugins, iproute2, util-linux): %w", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	id := make([]byte, 6)
	rand.Read(id)
	started := &Node{Name: opts.Name, Dir: dir, CgroupRoot: "/cloister-kubetest-" + hex.EncodeToString(id)}
	n = started
	defer func() {
		if err != nil {
			if serr := started.Stop(); serr != nil {
				err = errors.Join(err, serr)
			}
		}
	}()
	for _, d := range []string{"containerd/root", "containerd/state", "containerd/opt", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "sysctl"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := n.makeCgroupRoot(); err != nil {
		return nil, err
	}
	if err := n.enterNamespaces(opts.Log); err != nil {
		return nil, err
	}

	sock := filepath.Join(dir, "containerd.sock")
	cfg := filepath.Join(dir, "containerd.toml")
	conf := containerdConfig(dir, sock, opts.SandboxImage)
	if opts.Debug {
		conf += "\n[debug]\n  level = \"debug\"\n"
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "cni/net.d/10-kubetest.conflist"), []byte(cniConfig(dir)), 0o644); err != nil {
		return nil, err
	}
	if err := n.startIn(opts.Log, "containerd", "containerd", "--config", cfg); err != nil {
		return nil, err
	}
	for {
		if err := n.exited(); err != nil {
			return nil, err
		}
		if out, err := n.run(ctx, "ctr", "--address", sock, "version"); err == nil {
			break
		} else if ctx.Err() != nil {
			return nil, fmt.Errorf("containerd not answering: %w\n%s", err, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, img := range opts.Images {
		out, err := n.run(ctx, "ctr", "--address", sock, "--namespace", "k8s.io", "images", "import", "--snapshotter", "overlayfs", img)
		if err != nil {
			return nil, fmt.Errorf("importing %s into containerd: %w\n%s", img, err, out)
		}
		// ctr names an imported image by its tag only; a pod naming it
		// by digest (as the chart does with image.digest) needs the
		// repository@digest name a pull would have made.
		for _, m := range unpacked.FindAllStringSubmatch(out, -1) {
			repo := m[1]
			if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
				repo = repo[:i]
			}
			if out, err := n.run(ctx, "ctr", "--address", sock, "--namespace", "k8s.io", "images", "tag", m[1], repo+"@"+m[2]); err != nil {
				return nil, fmt.Errorf("naming %s by digest: %w\n%s", m[1], err, out)
			}
		}
	}

	// The kubelet reaches the API server through a forwarder listening on
	// the namespace's loopback.
	u, err := url.Parse(c.URL)
	if err != nil {
		return nil, err
	}
	if n.fwd, err = n.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(apiPort))); err != nil {
		return nil, err
	}
	go forward(n.fwd, u.Host)
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: kubetest, cluster: {server: "https://127.0.0.1:%d", insecure-skip-tls-verify: true}}]
users: [{name: kubelet, user: {token: %q}}]
contexts: [{name: kubetest, context: {cluster: kubetest, user: kubelet}}]
current-context: kubetest
`, apiPort, c.Token)), 0o600); err != nil {
		return nil, err
	}
	kcfg := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(kcfg, []byte(kubeletConfig(dir, sock, n.CgroupRoot)), 0o644); err != nil {
		return nil, err
	}
	if err := n.startIn(opts.Log, "kubelet", filepath.Join(opts.Bin, "kubelet"),
		"--config="+kcfg, "--kubeconfig="+kubeconfig, "--root-dir="+filepath.Join(dir, "kubelet"),
		"--hostname-override="+n.Name, "--node-ip="+NodeIP, "--v=1"); err != nil {
		return nil, err
	}
	kube, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	var last string
	for {
		if err := errors.Join(n.exited(), c.exited()); err != nil {
			return nil, fmt.Errorf("waiting for node %s: %w", n.Name, err)
		}
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err == nil {
			last = "registered, not ready"
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					last = fmt.Sprintf("Ready=%s: %s", cond.Status, cond.Message)
					if cond.Status == corev1.ConditionTrue {
						return n, nil
					}
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s not ready: %w (last: %s)", n.Name, ctx.Err(), last)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// containerdConfig keeps every path of containerd's under dir (those it
// cannot move — shim sockets under /run/containerd, pod network namespaces
// under /run/netns, CNI's cache under /var/lib/cni — land on the node's
// own tmpfs mounts), serves CRI on sock only, and names the sandbox image.
func containerdConfig(dir, sock, sandbox string) string {
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[6]q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  enable_selinux = false
  disable_hugetlb_controller = true
  # Never lower a process's oom_score_adj below containerd's own: lowering
  # needs CAP_SYS_RESOURCE, which root may lack (it does on the test
  # machine, where runc's init then dies before the sandbox starts).
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[7]q
    conf_dir = %[8]q
    max_conf_num = 1
`, filepath.Join(dir, "containerd/root"), filepath.Join(dir, "containerd/state"), sock, sock+".ttrpc",
		filepath.Join(dir, "containerd/opt"), sandbox, cniBinDir, filepath.Join(dir, "cni/net.d"))
}

// cniConfig is a bridge on PodSubnet, host-local addresses kept under dir,
// no masquerading (the pods talk to the kubelet and the test only).
func cniConfig(dir string) string {
	return fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "kubetest",
  "plugins": [{
    "type": "bridge",
    "bridge": %q,
    "isGateway": true,
    "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "dataDir": %q}
  }]
}
`, cniBridge, PodSubnet, filepath.Join(dir, "cni/ipam"))
}

// kubeletConfig: cgroup v1 allowed (failCgroupV1: false), cgroupfs under
// a cgroup root of the node's own, kernel defaults checked not changed,
// every port on the namespace's own addresses, eviction thresholds low
// enough that a shared disk does not keep pods away.
func kubeletConfig(dir, sock, cgroupRoot string) string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
cgroupsPerQOS: true
protectKernelDefaults: true
failSwapOn: false
containerRuntimeEndpoint: unix://%s
address: %s
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
resolvConf: ""
podLogsDir: %q
evictionHard: {memory.available: 100Mi, nodefs.available: 1%%, imagefs.available: 1%%, nodefs.inodesFree: 1%%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
nodeStatusUpdateFrequency: 5s
syncFrequency: 10s
serializeImagePulls: false
`, cgroupRoot, sock, NodeIP, filepath.Join(dir, "pod-logs"))
}

// cgroupHierarchies are the mounted cgroup hierarchies (v1 controllers,
// named ones and the v2 unified one of a hybrid host).
func cgroupHierarchies() ([]string, error) {
	ents, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, err
	}
	var dirs []string
	for _, e := range ents {
		d := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(d); err == nil && fi.IsDir() {
			if _, err := os.Stat(filepath.Join(d, "cgroup.procs")); err == nil {
				dirs = append(dirs, d)
			}
		}
	}
	if len(dirs) == 0 {
		// A v2-only host: /sys/fs/cgroup is the hierarchy.
		dirs = append(dirs, "/sys/fs/cgroup")
	}
	return dirs, nil
}

// makeCgroupRoot creates the kubelet's cgroup root in every hierarchy (a
// kubelet refuses a root that does not exist), cpuset's with its parent's
// CPUs and memory nodes.
func (n *Node) makeCgroupRoot() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		d := filepath.Join(h, n.CgroupRoot)
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("creating cgroup %s: %w", d, err)
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			if b, err := os.ReadFile(filepath.Join(h, f)); err == nil {
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					return fmt.Errorf("%s/%s: %w", d, f, err)
				}
			}
		}
	}
	return nil
}

// enterNamespaces starts the process holding the node's network and mount
// namespaces and prepares them: loopback up with the node's address, tmpfs
// over the fixed paths containerd and CNI use, and the kernel tunables the
// kubelet checks.
func (n *Node) enterNamespaces(log io.Writer) error {
	n.holder = exec.Command("unshare", "--net", "--mount", "--propagation", "private", "--", "sleep", "infinity")
	n.holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	n.holder.Stdout, n.holder.Stderr = log, log
	if err := n.holder.Start(); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	n.held = make(chan struct{})
	go func() { n.holder.Wait(); close(n.held) }()
	// unshare execs sleep once the namespaces exist.
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return err
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.Process.Pid))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", n.holder.Process.Pid))
		if err == nil && ns != self && strings.HasSuffix(exe, "/sleep") {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("unshare did not make the node's namespaces (mount namespace %s, running %s)", ns, exe)
		}
		time.Sleep(20 * time.Millisecond)
	}
	script := []string{
		"set -e",
		"ip link set lo up",
		"ip addr add " + NodeIP + "/32 dev lo",
		"mount -t tmpfs -o mode=0755,size=64m kubetest-run /run",
		"mount -t tmpfs -o mode=0755,size=64m kubetest-varlib /var/lib",
		"mount -t tmpfs -o mode=0755,size=64m kubetest-varlog /var/log",
	}
	for name, v := range kernelTunables {
		f := filepath.Join(n.Dir, "sysctl", strings.ReplaceAll(name, "/", "."))
		if err := os.WriteFile(f, []byte(v+"\n"), 0o444); err != nil {
			return err
		}
		script = append(script, fmt.Sprintf("mount --bind %s /proc/sys/%s", f, name))
	}
	if out, err := n.run(context.Background(), "sh", "-c", strings.Join(script, "\n")); err != nil {
		return fmt.Errorf("preparing the node's namespaces: %w\n%s", err, out)
	}
	return nil
}

// nsenter is the command line running argv in the node's namespaces.
func (n *Node) nsenter(argv ...string) []string {
	return append([]string{"nsenter", "--target", strconv.Itoa(n.holder.Process.Pid), "--net", "--mount", "--"}, argv...)
}

// startIn starts a long-running process in the node's namespaces.
func (n *Node) startIn(log io.Writer, name string, argv ...string) error {
	a := n.nsenter(argv...)
	return n.group.start(n.Dir, log, name, a[0], a[1:]...)
}

// run runs a command to completion in the node's namespaces.
func (n *Node) run(ctx context.Context, argv ...string) (string, error) {
	a := n.nsenter(argv...)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, a[0], a[1:]...)
	cmd.Dir = n.Dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Run runs a command to completion in the node's network and mount
// namespaces, bounded by ctx only: a client reaching pods at their
// addresses, as a process on the host could not.
func (n *Node) Run(ctx context.Context, argv ...string) (string, error) {
	a := n.nsenter(argv...)
	cmd := exec.CommandContext(ctx, a[0], a[1:]...)
	cmd.Dir = n.Dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// inNetNS runs f on an OS thread that has entered the node's network
// namespace: sockets f creates belong to that namespace.
func (n *Node) inNetNS(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer own.Close()
		target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", n.holder.Process.Pid))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := setns(target, syscall.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("entering the node's network namespace: %w", err)
			return
		}
		ferr := f()
		if err := setns(own, syscall.CLONE_NEWNET); err != nil {
			// The thread stays locked and ends with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("leaving the node's network namespace: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func setns(f *os.File, kind int) error { return unix.Setns(int(f.Fd()), kind) }

// DialContext connects to addr from inside the node's network namespace
// (to a pod's address, or the kubelet's).
func (n *Node) DialContext(ctx context.Context, network, addr string) (c net.Conn, err error) {
	err = n.inNetNS(func() error {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens on addr inside the node's network namespace.
func (n *Node) Listen(network, addr string) (l net.Listener, err error) {
	err = n.inNetNS(func() error {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// forward copies every connection accepted on l to target (on the host's
// loopback) and back, until l is closed.
func forward(l net.Listener, target string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			t, err := net.DialTimeout("tcp", target, 10*time.Second)
			if err != nil {
				return
			}
			defer t.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(t, c); t.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(c, t); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}

// Stop ends the kubelet and containerd, then every process left in the
// node's cgroups or namespaces (containerd's shims outlive containerd by
// design, and the containers their shims), lets the namespaces go with
// the last of them, and removes the cgroups. It reports what it could not
// remove.
func (n *Node) Stop() error {
	if n.fwd != nil {
		n.fwd.Close()
	}
	n.group.stop()
	var errs []error
	if n.holder != nil && n.holder.Process != nil {
		mnt, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", n.holder.Process.Pid))
		if err == nil {
			errs = append(errs, killAll(func(pid int) bool {
				m, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
				return m == mnt && pid != n.holder.Process.Pid
			}, n.cgroupProcs))
		}
		n.holder.Process.Kill()
		<-n.held
	} else {
		errs = append(errs, killAll(func(int) bool { return false }, n.cgroupProcs))
	}
	errs = append(errs, n.removeCgroups())
	return errors.Join(errs...)
}

// cgroupProcs lists the processes in the node's cgroups (the containers).
func (n *Node) cgroupProcs() []int {
	hs, _ := cgroupHierarchies()
	seen := map[int]bool{}
	var pids []int
	for _, h := range hs {
		filepath.WalkDir(filepath.Join(h, n.CgroupRoot), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// killAll sends SIGKILL, by process id, to every process match selects
// and every one more lists, until none is left (bounded).
func killAll(match func(pid int) bool, more func() []int) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		var pids []int
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			if pid, err := strconv.Atoi(e.Name()); err == nil && pid != os.Getpid() && match(pid) {
				pids = append(pids, pid)
			}
		}
		pids = append(pids, more()...)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes of the node still running after SIGKILL: %v", pids)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes the node's cgroup tree from every hierarchy,
// deepest first (a cgroup is removed with rmdir once it has no processes).
func (n *Node) removeCgroups() error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		root := filepath.Join(h, n.CgroupRoot)
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			for try := 0; try < 50; try++ {
				if err = syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, syscall.ENOENT) {
					err = nil
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}
