package chart

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/cloisterhq/cloister/deploy/internal/image"
	"github.com/cloisterhq/cloister/deploy/internal/kubetest"
)

// pauseRef names the pod sandbox image the test builds (containerd's
// sandbox_image): no registry is reachable to pull one.
const pauseRef = "cloisterhq/kubetest-pause:1"

// TestValidatorPodRuns installs the chart's validator into a control plane
// of its own with a real kubelet (v1.37.2, cgroup v1 allowed) and Debian's
// containerd, runc and CNI plugins, the image imported from the archive
// ./deploy/build-image writes; the pod must run, pass its readiness probe
// (the kubelet's), and answer /readyz at its pod address. Then everything
// is torn down and the test checks nothing is left on the host: no
// process, cgroup, interface or changed kernel tunable.
func TestValidatorPodRuns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a kubelet and containerd need root")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := kubetest.Binaries(ctx, filepath.Join("..", "kube"), os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	os.Chmod(work, 0o755)
	start := time.Now()
	cloisterTar, digest, pauseTar, cloisterBin := buildImages(ctx, t, work)
	t.Logf("images built in %s: cloister %s", time.Since(start).Round(time.Millisecond), digest)

	before := hostState(t)
	log := &lineLog{}
	var logw io.Writer = log
	if p := os.Getenv("CLOISTER_KUBETEST_LOG"); p != "" {
		// Every line of every process, for debugging the node.
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		logw = io.MultiWriter(log, f)
	}
	defer func() {
		if t.Failed() {
			tail := log.buf[max(0, len(log.buf)-24<<10):]
			t.Logf("--- control plane, containerd and kubelet output (last 24 KiB) ---\n%s", tail)
		}
	}()
	start = time.Now()
	c, err := kubetest.Start(ctx, filepath.Join(work, "cluster"), kubetest.Options{Bin: bin, Controllers: true, Kubelets: true, Log: logw})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	t.Logf("control plane ready in %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	node, err := kubetest.StartNode(ctx, c, filepath.Join(work, "node"), kubetest.NodeOptions{
		Bin: bin, Images: []string{cloisterTar, pauseTar}, SandboxImage: "docker.io/" + pauseRef, Log: logw, Debug: os.Getenv("CLOISTER_KUBETEST_LOG") != ""})
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			if err := node.Stop(); err != nil {
				t.Error(err)
			}
		}
	}()
	t.Logf("containerd and kubelet ready in %s (node %s, cgroup root %s)", time.Since(start).Round(time.Millisecond), node.Name, node.CgroupRoot)

	// A one-organisation consortium: its keys and values, as
	// docs/deploy.md's rehearsal makes them.
	cons := filepath.Join(work, "consortium")
	if out, err := exec.CommandContext(ctx, cloisterBin, "consortium", "init", "--orgs", "1", "--out", cons, "--chain-id", "kubelet-test").CombinedOutput(); err != nil {
		t.Fatalf("consortium init: %v\n%s", err, out)
	}
	vals := map[string]any{}
	b, err := os.ReadFile(filepath.Join(cons, "values-org1.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(b, &vals); err != nil {
		t.Fatal(err)
	}
	vals["image"] = map[string]any{"repository": image.Repository, "digest": digest}
	// No cluster DNS runs here, so the p2p Service's name the rehearsal
	// advertises cannot be resolved; a one-validator consortium has no
	// peers to advertise to.
	vals["validator"].(map[string]any)["externalAddress"] = ""
	vals["node"] = map[string]any{"enabled": false}

	cl := newClients(t, c)
	const ns = "org1"
	cl.namespace(ctx, t, ns)
	keys := map[string][]byte{}
	for _, f := range []string{"node_key.json", "priv_validator_key.json"} {
		if keys[f], err = os.ReadFile(filepath.Join(cons, "orgs", "org1", "keys", f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cl.kube.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "cloister-validator-keys"}, Data: keys}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The validator's volume: a directory of the node's (no provisioner),
	// owned by the validator's uid (fsGroup does not apply to hostPath).
	hostPathVolume(ctx, t, cl, "validator-data", filepath.Join(work, "node", "volumes", "validator"), image.UID)

	out, err := render(loadChart(t), ns, vals)
	if err != nil {
		t.Fatal(err)
	}
	var sts string
	for _, o := range decodeAll(t, out) {
		if err := cl.apply(ctx, ns, o, false); err != nil {
			t.Fatalf("%s %s: %v", o.gvk.Kind, o.name, err)
		}
		if o.gvk.Kind == "StatefulSet" {
			sts = o.name
		}
	}
	if !strings.HasSuffix(sts, "-validator") {
		t.Fatalf("the chart rendered StatefulSet %q, want only the validator's", sts)
	}

	// The pod runs, the kubelet's probes pass, and its API answers at the
	// pod's address.
	start = time.Now()
	pod := waitPodReady(ctx, t, cl, c, ns, sts+"-0", filepath.Join(work, "node"))
	t.Logf("validator pod running and ready in %s: %s", time.Since(start).Round(time.Millisecond), podSummary(pod))
	if pod.Spec.NodeName != node.Name {
		t.Errorf("pod on node %q, want %q", pod.Spec.NodeName, node.Name)
	}
	for _, cs := range pod.Status.ContainerStatuses {
		if !strings.HasSuffix(cs.ImageID, digest) {
			t.Errorf("container %s runs image %s, want the built digest %s", cs.Name, cs.ImageID, digest)
		}
	}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: node.DialContext}}
	api := "http://" + net.JoinHostPort(pod.Status.PodIP, "26680")
	for _, path := range []string{"/readyz", "/v1/status"} {
		resp, err := hc.Get(api + path)
		if err != nil {
			t.Fatalf("GET %s%s: %v", api, path, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s%s: %s %s", api, path, resp.Status, body)
		}
		t.Logf("GET %s%s: %s %s", api, path, resp.Status, strings.TrimSpace(string(body)))
	}
	hc.CloseIdleConnections()

	// A node joins, with the validator pod as its ledger (no cluster DNS
	// resolves the validator's Service): the chart's root jail, as
	// TestNodeInContainer runs it under runc, now in a pod the kubelet
	// makes from the chart's securityContext.
	// Owned by root: the root jail has no CAP_DAC_OVERRIDE.
	// Two nodes, each offering capacity and taking part in PIEE epochs.
	hostPathVolume(ctx, t, cl, "node-data", filepath.Join(work, "node", "volumes", "node"), 0)
	hostPathVolume(ctx, t, cl, "node-data-1", filepath.Join(work, "node", "volumes", "node-1"), 0)
	vals["node"] = map[string]any{"enabled": true, "replicas": 2, "jail": "root",
		"offer": map[string]any{"ttl": "5m"}, "piee": map[string]any{"enabled": true},
		// Two nodes and the validator on a kubelet with 2 cores.
		"resources": map[string]any{"requests": map[string]any{"cpu": "200m", "memory": "256Mi"}, "limits": map[string]any{"memory": "4Gi"}}}
	vals["ledger"] = map[string]any{"url": "http://" + net.JoinHostPort(pod.Status.PodIP, "26680")}
	if out, err = render(loadChart(t), ns, vals); err != nil {
		t.Fatal(err)
	}
	var nodeSts string
	for _, o := range decodeAll(t, out) {
		if err := cl.apply(ctx, ns, o, false); err != nil {
			t.Fatalf("%s %s: %v", o.gvk.Kind, o.name, err)
		}
		if o.gvk.Kind == "StatefulSet" && strings.HasSuffix(o.name, "-node") {
			nodeSts = o.name
		}
	}
	start = time.Now()
	npod := waitPodReady(ctx, t, cl, c, ns, nodeSts+"-0", filepath.Join(work, "node"))
	t.Logf("node pod running and ready in %s: %s", time.Since(start).Round(time.Millisecond), podSummary(npod))
	npod1 := waitPodReady(ctx, t, cl, c, ns, nodeSts+"-1", filepath.Join(work, "node"))
	t.Logf("second node pod running and ready in %s: %s", time.Since(start).Round(time.Millisecond), podSummary(npod1))
	hc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: node.DialContext,
		// The node's certificate is its own, self-signed; the chart's
		// probes do not verify it either.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	for _, path := range []string{"/readyz", "/v1/node/status"} {
		u := "https://" + net.JoinHostPort(npod.Status.PodIP, "7443") + path
		resp, err := hc.Get(u)
		if err != nil {
			t.Fatalf("GET %s: %v", u, err)
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s %s", u, resp.Status, body)
		}
		t.Logf("GET %s: %s %.300s", u, resp.Status, strings.TrimSpace(string(body)))
	}
	hc.CloseIdleConnections()

	pieeEpochInPods(ctx, t, node, cloisterBin, work, cons, api)

	// Teardown leaves nothing behind.
	stopped = true
	if err := node.Stop(); err != nil {
		t.Fatal(err)
	}
	if after := hostState(t); after != before {
		t.Errorf("the host changed:\nbefore: %s\nafter:  %s", before, after)
	}
	if _, err := os.Stat(filepath.Join("/sys/fs/cgroup/memory", node.CgroupRoot)); !os.IsNotExist(err) {
		t.Errorf("cgroup %s left behind: %v", node.CgroupRoot, err)
	}
	if leftovers := mountsUnder(t, work); len(leftovers) > 0 {
		t.Errorf("mounts left under the test's directory: %v", leftovers)
	}
}

// hostPathVolume makes dir (mode 0700, owned by uid) and a
// PersistentVolume of it named name, for one claim of the chart's.
func hostPathVolume(ctx context.Context, t *testing.T, cl *clients, name, dir string, uid int) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, uid, uid); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.kube.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("100Gi")},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: dir}},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// buildImages writes the cloister image (as ./deploy/build-image does) and
// the pause image into dir, and returns their archives, the cloister
// image's digest and its cloister binary (for the consortium's keys).
func buildImages(ctx context.Context, t *testing.T, dir string) (cloisterTar, digest, pauseTar, cloisterBin string) {
	t.Helper()
	src, err := image.DescribeSource(ctx, filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	cloisterTar = filepath.Join(dir, "cloister.tar")
	res, err := image.Build(ctx, cloisterTar, image.Options{Source: src})
	if err != nil {
		t.Fatal(err)
	}
	pauseBin := filepath.Join(dir, "pause")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w -buildid=", "-o", pauseBin, "../internal/kubetest/pause")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the pause program: %v\n%s", err, out)
	}
	prog, err := os.ReadFile(pauseBin)
	if err != nil {
		t.Fatal(err)
	}
	pauseTar = filepath.Join(dir, "pause.tar")
	if _, err := image.WriteProgram(prog, "pause", "65535:65535", pauseRef, src.Epoch, pauseTar); err != nil {
		t.Fatal(err)
	}
	img, err := image.Open(cloisterTar, filepath.Join(dir, "layout"))
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(dir, "rootfs")
	if err := image.Unpack(img, rootfs); err != nil {
		t.Fatal(err)
	}
	return cloisterTar, res.Digest, pauseTar, filepath.Join(rootfs, image.BinDir, "cloister")
}

// waitPodReady waits (bounded) until the pod runs and the kubelet finds it
// ready, failing early when a container keeps restarting.
func waitPodReady(ctx context.Context, t *testing.T, cl *clients, c *kubetest.Cluster, ns, name, nodeDir string) *corev1.Pod {
	t.Helper()
	start := time.Now()
	var last, lastLogged string
	waitCtx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	for {
		if err := c.Check(); err != nil {
			t.Fatal(err)
		}
		p, err := cl.kube.CoreV1().Pods(ns).Get(waitCtx, name, metav1.GetOptions{})
		if err == nil {
			last = podSummary(p)
			if last != lastLogged {
				t.Logf("%6.1fs %s", time.Since(start).Seconds(), last)
				lastLogged = last
			}
			if p.Status.Phase == corev1.PodRunning && podReady(p) {
				return p
			}
			for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
				if cs.RestartCount >= 2 {
					t.Fatalf("%s: container %s restarted %d times: %s\n%s", name, cs.Name, cs.RestartCount, last, podLogs(nodeDir))
				}
			}
		} else {
			last = err.Error()
		}
		select {
		case <-waitCtx.Done():
			evs, _ := cl.kube.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
			var lines []string
			for _, e := range evs.Items {
				lines = append(lines, fmt.Sprintf("%s %s: %s", e.InvolvedObject.Name, e.Reason, e.Message))
			}
			t.Fatalf("pod %s not running and ready: %s\nevents:\n%s\n%s", name, last, strings.Join(lines, "\n"), podLogs(nodeDir))
		case <-time.After(time.Second):
		}
	}
}

// podLogs is the tail of every container log the kubelet wrote under the
// node's directory (the API server cannot fetch logs: it does not reach
// the kubelet, which listens in the node's network namespace).
func podLogs(nodeDir string) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(nodeDir, "pod-logs", "*", "*", "*.log"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		rel, _ := filepath.Rel(nodeDir, f)
		fmt.Fprintf(&b, "--- %s ---\n%s\n", rel, data[max(0, len(data)-4096):])
	}
	return b.String()
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podSummary(p *corev1.Pod) string {
	s := fmt.Sprintf("phase %s on %q, ip %s", p.Status.Phase, p.Spec.NodeName, p.Status.PodIP)
	for _, c := range p.Status.Conditions {
		if c.Status != corev1.ConditionTrue && c.Message != "" {
			s += fmt.Sprintf("; %s: %s", c.Type, c.Message)
		}
	}
	for _, cs := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
		switch {
		case cs.State.Waiting != nil:
			s += fmt.Sprintf("; %s waiting: %s %s", cs.Name, cs.State.Waiting.Reason, cs.State.Waiting.Message)
		case cs.State.Terminated != nil:
			s += fmt.Sprintf("; %s terminated: %s (exit %d) %s", cs.Name, cs.State.Terminated.Reason, cs.State.Terminated.ExitCode, cs.State.Terminated.Message)
		case cs.State.Running != nil:
			s += fmt.Sprintf("; %s running (ready %v, restarts %d)", cs.Name, cs.Ready, cs.RestartCount)
		}
	}
	return s
}

// hostState is what the kubelet test must not change on the host: the
// kernel tunables a kubelet sets, the node's bridge, the kubelet's and
// CNI's iptables chains, and containerd's and CNI's mounts in the host's
// own mount namespace.
func hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, f := range []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"} {
		v, err := os.ReadFile("/proc/sys/" + f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s=%s ", f, strings.TrimSpace(string(v)))
	}
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, "kubetest") {
			fmt.Fprintf(&b, "interface %s ", i.Name)
		}
	}
	// The kubelet makes KUBE-* chains and the bridge plugin CNI-* ones
	// where iptables exists (here: in the node's namespace only).
	for _, save := range []string{"iptables-save", "ip6tables-save"} {
		if p, err := exec.LookPath(save); err == nil {
			out, _ := exec.Command(p).Output()
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, "KUBE-") || strings.Contains(line, "CNI-") {
					fmt.Fprintf(&b, "%s: %s ", save, line)
				}
			}
		}
	}
	for _, m := range mountsUnder(t, "/run") {
		if strings.HasPrefix(m, "/run/containerd") || strings.HasPrefix(m, "/run/netns/cni-") {
			fmt.Fprintf(&b, "mount %s ", m)
		}
	}
	return b.String()
}

// mountsUnder lists the host mount namespace's mount points under dir.
func mountsUnder(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

// pieeEpochInPods runs a PIEE epoch with both node pods as its
// participants: a member (admitted with the validator's consensus key)
// publishes the operators and opens an epoch, and every verdict must be
// a pass the CLI recomputes from the signed reveals — the same protocol
// as on one host, nothing of it depending on where the nodes run. The
// CLI runs in the node's network namespace, where pod addresses route.
func pieeEpochInPods(ctx context.Context, t *testing.T, node *kubetest.Node, cloisterBin, work, cons, api string) {
	t.Helper()
	start := time.Now()
	run := func(argv ...string) string {
		t.Helper()
		out, err := node.Run(ctx, append([]string{cloisterBin}, argv...)...)
		if err != nil {
			t.Fatalf("cloister %s: %v\n%s", strings.Join(argv, " "), err, out)
		}
		return out
	}
	orgKey := filepath.Join(work, "org1.key")
	run("key", "new", "--out", orgKey)
	var pk struct {
		Signing string `json:"signing_key"`
	}
	if err := json.Unmarshal([]byte(run("key", "public", orgKey, "--json")), &pk); err != nil {
		t.Fatal(err)
	}
	pub := pk.Signing
	vhome := filepath.Join(work, "validator-home")
	if err := os.MkdirAll(filepath.Join(vhome, "config"), 0o700); err != nil {
		t.Fatal(err)
	}
	pv, err := os.ReadFile(filepath.Join(cons, "orgs", "org1", "keys", "priv_validator_key.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vhome, "config", "priv_validator_key.json"), pv, 0o600); err != nil {
		t.Fatal(err)
	}
	run("ledger", "member", "admit", "--ledger", api, "--validator-home", vhome, "--member", pub, "--name", "org1")
	run("piee", "publish", "--ledger", api, "--key", orgKey)
	out := run("piee", "run-epoch", "--ledger", api, "--key", orgKey, "--commit", "40s", "--reveal", "20s", "--wait", "--json")
	var fs []struct {
		Node     string `json:"node"`
		Operator string `json:"operator"`
		Recorded *struct {
			Outcome string `json:"outcome"`
		} `json:"recorded"`
		Agrees bool `json:"agrees"`
	}
	if err := json.Unmarshal([]byte(out[max(0, strings.Index(out, "[")):]), &fs); err != nil {
		t.Fatalf("run-epoch --json: %v\n%s", err, out)
	}
	if len(fs) != 2 {
		t.Fatalf("%d verdicts, want one per node pod:\n%s", len(fs), out)
	}
	for _, f := range fs {
		if f.Recorded == nil || f.Recorded.Outcome != "pass" || !f.Agrees {
			t.Errorf("node %s (%s): %+v, want a pass the CLI recomputes", f.Node, f.Operator, f.Recorded)
		}
	}
	t.Logf("PIEE epoch with both node pods: %d passes in %s", len(fs), time.Since(start).Round(time.Millisecond))
}
