package chart

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestConsortiumValuesRender: the values files 'cloister consortium init'
// writes pass the chart's schema as they are, and give each organisation's
// validator its own peers and the consortium's genesis.
func TestConsortiumValuesRender(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "cloister")
	build := exec.Command("go", "build", "-o", bin, "./cmd/cloister")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building cloister: %v\n%s", err, out)
	}
	out := filepath.Join(dir, "consortium")
	if b, err := exec.Command(bin, "consortium", "init", "--orgs", "3", "--out", out, "--chain-id", "acme").CombinedOutput(); err != nil {
		t.Fatalf("consortium init: %v\n%s", err, b)
	}
	genesis, err := os.ReadFile(filepath.Join(out, "genesis.json"))
	if err != nil {
		t.Fatal(err)
	}
	ch := loadChart(t)
	for _, org := range []string{"org1", "org2", "org3"} {
		b, err := os.ReadFile(filepath.Join(out, "values-"+org+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		vals := map[string]any{}
		if err := yaml.UnmarshalStrict(b, &vals); err != nil {
			t.Fatalf("values-%s.yaml: %v", org, err)
		}
		vals["image"] = map[string]any{"tag": "test"}
		lintChart(t, vals)
		rendered, err := render(ch, org, vals)
		if err != nil {
			t.Fatalf("values-%s.yaml: %v", org, err)
		}
		objs := decodeAll(t, rendered)
		v := findPod(t, podSpecs(objs), "validator")
		args := v.Spec.InitContainers[0].Args
		var peers []string
		for _, a := range args {
			if p, ok := strings.CutPrefix(a, "--peer="); ok {
				peers = append(peers, p)
			}
		}
		if len(peers) != 2 || slices.ContainsFunc(peers, func(p string) bool { return strings.Contains(p, "."+org+".svc") }) {
			t.Errorf("%s: peers %v, want the two others", org, peers)
		}
		for _, o := range objs {
			if o.gvk.Kind == "ConfigMap" && strings.HasSuffix(o.name, "-genesis") {
				var cm struct {
					Data map[string]string `json:"data"`
				}
				if err := yaml.Unmarshal(o.json, &cm); err != nil {
					t.Fatal(err)
				}
				if strings.TrimSpace(cm.Data["genesis.json"]) == "" || !strings.Contains(cm.Data["genesis.json"], `"chain_id":"acme"`) {
					t.Errorf("%s: genesis ConfigMap %q", org, cm.Data["genesis.json"])
				}
			}
		}
		if !strings.Contains(string(genesis), `"chain_id": "acme"`) {
			t.Errorf("genesis.json: %s", genesis)
		}
	}
}
