package chart

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"github.com/cloisterhq/cloister/deploy/internal/kubetest"
)

type clients struct {
	kube   kubernetes.Interface
	dyn    dynamic.Interface
	mapper meta.RESTMapper
}

func newClients(t *testing.T, c *kubetest.Cluster) *clients {
	t.Helper()
	kube, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	return &clients{kube: kube, dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}
}

// apply sends one object with server-side apply: the API server decodes it
// against its own schema (unknown fields refused), defaults and validates
// it, runs admission, and — with dryRun — stores nothing.
func (cl *clients) apply(ctx context.Context, ns string, o object, dryRun bool) error {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(o.json); err != nil {
		return err
	}
	m, err := cl.mapper.RESTMapping(o.gvk.GroupKind(), o.gvk.Version)
	if err != nil {
		return fmt.Errorf("%s: %w", o.gvk, err)
	}
	var ri dynamic.ResourceInterface = cl.dyn.Resource(m.Resource)
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		ri = cl.dyn.Resource(m.Resource).Namespace(ns)
	}
	opts := metav1.ApplyOptions{FieldManager: "cloister-chart-test", Force: true}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	_, err = ri.Apply(ctx, u.GetName(), u, opts)
	return err
}

func (cl *clients) namespace(ctx context.Context, t *testing.T, name string) {
	t.Helper()
	_, err := cl.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// installCRD installs the ServiceMonitor schema once and waits until it
// is served.
func (cl *clients) installCRD(ctx context.Context, t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("testdata/servicemonitor-crd.yaml")
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	if err := cl.apply(ctx, "", object{gvk: u.GroupVersionKind(), name: u.GetName(), json: js}, false); err != nil {
		t.Fatal(err)
	}
	for {
		cl.mapper.(*restmapper.DeferredDiscoveryRESTMapper).Reset()
		if _, err := cl.mapper.RESTMapping(schema.GroupKind{Group: "monitoring.coreos.com", Kind: "ServiceMonitor"}, "v1"); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("ServiceMonitor CRD not served: %v", ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// TestServerDryRun applies every object of every value set to the real API
// server with server-side apply in dry-run mode, in a namespace of its own.
func TestServerDryRun(t *testing.T) {
	c := apiServer(t)
	cl := newClients(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cl.installCRD(ctx, t)
	ch := loadChart(t)
	for _, set := range valueSets {
		t.Run(set, func(t *testing.T) {
			ns := "dry-" + set
			cl.namespace(ctx, t, ns)
			out, err := render(ch, ns, readValues(t, set))
			if err != nil {
				t.Fatal(err)
			}
			objs := decodeAll(t, out)
			for _, o := range objs {
				if err := cl.apply(ctx, ns, o, true); err != nil {
					t.Errorf("%s %s (%s): refused by the API server: %v", o.gvk.Kind, o.name, o.source, err)
				}
			}
			t.Logf("%d objects accepted", len(objs))
		})
	}
}

// TestServerRefusesWhatStrictDecodingRefuses: the dry run is not a rubber
// stamp — a field the schema lacks and a capability set the API forbids
// are refused by the server too.
func TestServerRefusesWhatStrictDecodingRefuses(t *testing.T) {
	c := apiServer(t)
	cl := newClients(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cl.namespace(ctx, t, "dry-refused")
	ch := loadChart(t)
	out, err := render(ch, "dry-refused", readValues(t, "sev-snp"))
	if err != nil {
		t.Fatal(err)
	}
	var sts object
	for _, o := range decodeAll(t, out) {
		if o.gvk.Kind == "StatefulSet" && strings.HasSuffix(o.name, "-node") {
			sts = o
		}
	}
	if sts.name == "" {
		t.Fatal("no node StatefulSet")
	}
	unknown := object{gvk: sts.gvk, name: sts.name, json: []byte(strings.Replace(string(sts.json), `"replicas":`, `"replicaz":1,"replicas":`, 1))}
	if err := cl.apply(ctx, "dry-refused", unknown, true); err == nil || !strings.Contains(err.Error(), "replicaz") {
		t.Errorf("unknown field: %v", err)
	}
	// CAP_SYS_ADMIN with allowPrivilegeEscalation: false is invalid (the
	// API server checks the name as written with its CAP_ prefix).
	bad := strings.Replace(string(sts.json), `"readOnlyRootFilesystem":true`, `"readOnlyRootFilesystem":true,"allowPrivilegeEscalation":false`, 1)
	bad = strings.Replace(bad, `"SYS_ADMIN"`, `"CAP_SYS_ADMIN"`, 1)
	if bad == string(sts.json) {
		t.Fatal("no readOnlyRootFilesystem in the node container")
	}
	if err := cl.apply(ctx, "dry-refused", object{gvk: sts.gvk, name: sts.name, json: []byte(bad)}, true); err == nil || !strings.Contains(err.Error(), "allowPrivilegeEscalation") {
		t.Errorf("CAP_SYS_ADMIN without privilege escalation: %v", err)
	}
}

// TestWorkloadsScheduled installs a whole organisation for real and waits
// until the controller manager created every pod of every StatefulSet and
// Deployment, bound their volume claims, and the scheduler placed each pod
// on the registered node. (Nothing runs them: that node has no kubelet.)
func TestWorkloadsScheduled(t *testing.T) {
	c := apiServer(t)
	cl := newClients(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	const nodeName = "kubetest-node"
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{
			"kubernetes.io/hostname": nodeName, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}},
	}
	node, err := cl.kube.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Status = corev1.NodeStatus{
		Capacity: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("16"), corev1.ResourceMemory: resource.MustParse("64Gi"), corev1.ResourcePods: resource.MustParse("110")},
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}},
		Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}},
	}
	node.Status.Allocatable = node.Status.Capacity
	if node, err = cl.kube.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// Admission taints a new Node not-ready until the lifecycle
	// controller (off: no kubelet heartbeats) sees it Ready.
	for {
		n, err := cl.kube.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		n.Spec.Taints = nil
		if _, err = cl.kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err == nil {
			break
		} else if !apierrors.IsConflict(err) {
			t.Fatal(err)
		}
	}
	// Volumes for the claims (no provisioner runs here).
	for i := range 8 {
		pv := &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("kubetest-pv-%d", i)},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:                      corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("100Gi")},
				AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
				PersistentVolumeSource:        corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: fmt.Sprintf("/nonexistent/kubetest-%d", i)}},
			},
		}
		if _, err := cl.kube.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
	}
	ns := "org1"
	cl.namespace(ctx, t, ns)
	vals := readValues(t, "full-org")
	vals["metrics"] = map[string]any{"serviceMonitor": map[string]any{"enabled": false}}
	out, err := render(loadChart(t), ns, vals)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, o := range decodeAll(t, out) {
		if err := cl.apply(ctx, ns, o, false); err != nil {
			t.Fatalf("%s %s: %v", o.gvk.Kind, o.name, err)
		}
		switch o.gvk.Kind {
		case "StatefulSet", "Deployment":
			r, _, _ := unstructured.NestedInt64(mustMap(t, o.json), "spec", "replicas")
			want += int(r)
		}
	}
	start := time.Now()
	var last string
	for {
		if err := c.Check(); err != nil {
			t.Fatal(err)
		}
		pods, err := cl.kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		scheduled := 0
		var pending []string
		for _, p := range pods.Items {
			if p.Spec.NodeName == nodeName {
				scheduled++
			} else {
				msg := ""
				for _, cond := range p.Status.Conditions {
					if cond.Type == corev1.PodScheduled {
						msg = cond.Message
					}
				}
				pending = append(pending, p.Name+": "+msg)
			}
		}
		last = fmt.Sprintf("%d of %d pods exist, %d scheduled; unscheduled: %v", len(pods.Items), want, scheduled, pending)
		if len(pods.Items) == want && scheduled == want {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pods not all scheduled: %s", last)
		case <-time.After(500 * time.Millisecond):
		}
	}
	t.Logf("%s in %s", last, time.Since(start).Round(time.Millisecond))
	pvcs, err := cl.kube.CoreV1().PersistentVolumeClaims(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, pvc := range pvcs.Items {
		if pvc.Status.Phase != corev1.ClaimBound {
			t.Errorf("claim %s is %s", pvc.Name, pvc.Status.Phase)
		}
	}
	if len(pvcs.Items) != 5 {
		t.Errorf("%d claims, want 5 (validator, 2 nodes, broker, blob store)", len(pvcs.Items))
	}
}

func mustMap(t *testing.T, js []byte) map[string]any {
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(js); err != nil {
		t.Fatal(err)
	}
	return u.Object
}
