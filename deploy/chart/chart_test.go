package chart

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// valueSets are the value files under testdata/values, each a way an
// organisation deploys.
var valueSets = []string{"node-only", "full-org", "sev-snp", "tdx-coco"}

func TestLint(t *testing.T) {
	for _, set := range valueSets {
		t.Run(set, func(t *testing.T) {
			lintChart(t, readValues(t, set))
		})
	}
}

// TestBadValuesRefused: a wrong value fails at install time, with a
// message that names it.
func TestBadValuesRefused(t *testing.T) {
	want := map[string]string{
		"unknown-key":   "replica",
		"isolate-class": "isolateClass",
		"peer":          "peers",
		"no-genesis":    "genesis",
		"digest":        "digest",
		"no-ledger":     "ledger.url is required",
		"no-image":      "image.tag or image.digest is required",
		"port":          "port",
		"offer-ttl":     "ttl",
	}
	ch := loadChart(t)
	entries, err := os.ReadDir(filepath.Join("testdata", "bad"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Fatalf("%d files in testdata/bad, %d expectations", len(entries), len(want))
	}
	for _, e := range entries {
		name := strings.TrimSuffix(e.Name(), ".yaml")
		t.Run(name, func(t *testing.T) {
			sub, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for %s", e.Name())
			}
			b, err := os.ReadFile(filepath.Join("testdata", "bad", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			vals := map[string]any{}
			if err := yamlUnmarshal(b, &vals); err != nil {
				t.Fatal(err)
			}
			_, err = render(ch, "bad", vals)
			if err == nil {
				t.Fatalf("rendered; want an error naming %q", sub)
			}
			if !strings.Contains(err.Error(), sub) {
				t.Fatalf("error %q does not name %q", err, sub)
			}
		})
	}
}

// TestRenderStrict renders each value set, decodes every object strictly
// and checks what each component promises.
func TestRenderStrict(t *testing.T) {
	ch := loadChart(t)
	for _, set := range valueSets {
		t.Run(set, func(t *testing.T) {
			out, err := render(ch, "org", readValues(t, set))
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeAll(t, out)
			checkWorkloads(t, set, objs)
		})
	}
}

// podSpecs returns each workload's name and pod template.
func podSpecs(objs []object) map[string]*corev1.PodTemplateSpec {
	m := map[string]*corev1.PodTemplateSpec{}
	for _, o := range objs {
		switch w := o.typed.(type) {
		case *appsv1.StatefulSet:
			m[w.Name] = &w.Spec.Template
		case *appsv1.Deployment:
			m[w.Name] = &w.Spec.Template
		}
	}
	return m
}

func checkWorkloads(t *testing.T, set string, objs []object) {
	t.Helper()
	pods := podSpecs(objs)
	if len(pods) == 0 {
		t.Fatal("no workloads rendered")
	}
	policies := map[string]*networkingv1.NetworkPolicy{}
	pdbs := map[string]*policyv1.PodDisruptionBudget{}
	for _, o := range objs {
		switch v := o.typed.(type) {
		case *networkingv1.NetworkPolicy:
			policies[v.Spec.PodSelector.MatchLabels["app.kubernetes.io/component"]] = v
		case *policyv1.PodDisruptionBudget:
			pdbs[v.Spec.Selector.MatchLabels["app.kubernetes.io/component"]] = v
		}
	}
	for name, tpl := range pods {
		component := tpl.Labels["app.kubernetes.io/component"]
		spec := &tpl.Spec
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: the service account token is mounted; no component talks to the API server", name)
		}
		var served []int32
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s/%s: root file system not read-only", name, c.Name)
			}
			if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
				t.Errorf("%s/%s: capabilities not dropped", name, c.Name)
			}
			if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Memory().IsZero() {
				t.Errorf("%s/%s: no memory request and limit", name, c.Name)
			}
			for _, p := range c.Ports {
				served = append(served, p.ContainerPort)
			}
		}
		for _, c := range spec.Containers {
			if c.ReadinessProbe == nil || c.LivenessProbe == nil {
				t.Errorf("%s/%s: no readiness or liveness probe", name, c.Name)
			}
			if component == "node" {
				checkNodeContainer(t, set, c)
			} else if *c.SecurityContext.RunAsNonRoot != true || *c.SecurityContext.AllowPrivilegeEscalation {
				t.Errorf("%s/%s: not a restricted container", name, c.Name)
			}
		}
		if np, ok := policies[component]; ok {
			var allowed []int32
			for _, r := range np.Spec.Ingress {
				for _, p := range r.Ports {
					allowed = append(allowed, p.Port.IntVal)
				}
			}
			slices.Sort(allowed)
			slices.Sort(served)
			if !slices.Equal(allowed, served) {
				t.Errorf("%s: NetworkPolicy opens %v, the pod serves %v", name, allowed, served)
			}
		} else if set != "tdx-coco" {
			t.Errorf("%s: no NetworkPolicy", name)
		}
		switch component {
		case "node", "dispatcher", "validator", "broker": // all serve /metrics
			if _, ok := tpl.Annotations["prometheus.io/scrape"]; ok == (set == "tdx-coco") {
				t.Errorf("%s: scrape annotation present=%v", name, ok)
			}
		}
		if component == "validator" {
			if pdbs["validator"] == nil {
				t.Errorf("validator without a PodDisruptionBudget")
			}
		}
	}
	switch set {
	case "sev-snp":
		node := findPod(t, pods, "node")
		if node.Spec.NodeSelector["cloud.google.com/gke-confidential-nodes-instance-type"] != "SEV_SNP" {
			t.Errorf("node not pinned to the SEV-SNP pool: %v", node.Spec.NodeSelector)
		}
		broker := findPod(t, pods, "broker")
		if len(broker.Spec.Tolerations) != 1 || broker.Spec.NodeSelector == nil {
			t.Errorf("applyToAll: broker not in the pool: %v %v", broker.Spec.NodeSelector, broker.Spec.Tolerations)
		}
		q := node.Spec.Containers[0].Resources.Limits["squat.ai/tpmrm"]
		if q.Value() != 1 {
			t.Errorf("tpm device-plugin resource not requested: %v", node.Spec.Containers[0].Resources.Limits)
		}
	case "tdx-coco":
		node := findPod(t, pods, "node")
		if node.Spec.RuntimeClassName == nil || *node.Spec.RuntimeClassName != "kata-qemu-tdx" {
			t.Errorf("runtimeClassName = %v", node.Spec.RuntimeClassName)
		}
		if len(node.Spec.NodeSelector) != 0 {
			t.Errorf("CoCo: nodeSelector %v, want none", node.Spec.NodeSelector)
		}
		found := false
		for _, v := range node.Spec.Volumes {
			found = found || (v.HostPath != nil && v.HostPath.Path == "/dev/tpmrm0")
		}
		if !found {
			t.Errorf("tpm class without a device")
		}
	case "full-org":
		if len(pods) != 5 {
			t.Errorf("%d workloads, want validator, node, broker, dispatcher, blob store", len(pods))
		}
		d := findPod(t, pods, "dispatcher")
		if args := strings.Join(d.Spec.Containers[0].Args, " "); !strings.Contains(args, "--program=/programs/wordcount.json") {
			t.Errorf("dispatcher: the listing is not a --program: %s", args)
		}
		if p := d.Spec.Containers[0].ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/readyz" {
			t.Errorf("dispatcher: readiness is not its /readyz: %+v", p)
		}
		v := findPod(t, pods, "validator")
		args := strings.Join(v.Spec.InitContainers[0].Args, " ")
		for _, want := range []string{"--peer=0123456789abcdef0123456789abcdef01234567@validator.org2.example:26656", "--validators=3", "--external-address=validator.org1.example:26656"} {
			if !strings.Contains(args, want) {
				t.Errorf("validator home: %s lacks %s", args, want)
			}
		}
		n := findPod(t, pods, "node")
		if !slices.Contains(n.Spec.Containers[0].Args, "--admission=consortium") {
			t.Errorf("node does not admit the consortium's members by default (it refuses to serve beyond loopback openly): %v", n.Spec.Containers[0].Args)
		}
		for _, want := range []string{"--piee", "--offer-ttl=5m", "--offer-memory=2GiB"} {
			if !slices.Contains(n.Spec.Containers[0].Args, want) {
				t.Errorf("node takes no part in PIEE epochs with an offer (%s): %v", want, n.Spec.Containers[0].Args)
			}
		}
		if !slices.Contains(n.Spec.Containers[0].Args, "--ledger=http://cl-cloister-validator-api:26680") {
			t.Errorf("node does not record on the release's validator: %v", n.Spec.Containers[0].Args)
		}
		if img := n.Spec.Containers[0].Image; !strings.HasSuffix(img, "@sha256:0000000000000000000000000000000000000000000000000000000000000001") {
			t.Errorf("image %s not pinned by digest", img)
		}
	}
}

func findPod(t *testing.T, pods map[string]*corev1.PodTemplateSpec, component string) *corev1.PodTemplateSpec {
	t.Helper()
	for _, p := range pods {
		if p.Labels["app.kubernetes.io/component"] == component {
			return p
		}
	}
	t.Fatalf("no %s workload", component)
	return nil
}

// checkNodeContainer: the node holds exactly the privileges its jail mode
// needs (docs/deploy.md).
func checkNodeContainer(t *testing.T, set string, c corev1.Container) {
	t.Helper()
	sc := c.SecurityContext
	var add []string
	for _, a := range sc.Capabilities.Add {
		add = append(add, string(a))
	}
	slices.Sort(add)
	root := set == "sev-snp"
	if root {
		if want := []string{"KILL", "SETGID", "SETPCAP", "SETUID", "SYS_ADMIN"}; !slices.Equal(add, want) {
			t.Errorf("root jail: capabilities %v, want %v", add, want)
		}
		if *sc.RunAsUser != 0 {
			t.Errorf("root jail: runAsUser %d", *sc.RunAsUser)
		}
	} else {
		if len(add) != 0 {
			t.Errorf("rootless jail: capabilities added: %v", add)
		}
		if !*sc.RunAsNonRoot || *sc.RunAsUser != 65532 || *sc.AllowPrivilegeEscalation {
			t.Errorf("rootless jail: not a non-root container without privilege escalation")
		}
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("node container is privileged")
	}
}
