package chart

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chartv2 "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

const chartDir = "../helm/cloister"

// object is one rendered manifest: its source template, its JSON and, for
// kinds of k8s.io/api, the typed value it decoded into.
type object struct {
	source string
	gvk    schema.GroupVersionKind
	name   string
	json   []byte
	typed  runtime.Object
}

func loadChart(t testing.TB) *chartv2.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("loading the chart: %v", err)
	}
	return ch
}

func readValues(t testing.TB, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "values", name+".yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := yaml.UnmarshalStrict(b, &v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if v == nil {
		v = map[string]any{}
	}
	return v
}

// render renders the chart as `helm install --namespace ns` would, with
// values checked against values.schema.json and templates in strict mode
// (a missing value is an error, as with `helm lint --strict`).
func render(ch *chartv2.Chart, ns string, vals map[string]any) (map[string]string, error) {
	rv, err := util.ToRenderValues(ch, vals, common.ReleaseOptions{Name: "cl", Namespace: ns, IsInstall: true, Revision: 1}, nil)
	if err != nil {
		return nil, err
	}
	return engine.Engine{Strict: true}.Render(ch, rv)
}

var docSep = regexp.MustCompile(`(?m)^---\s*$`)

// strictDecoder rejects unknown and duplicate fields.
var strictDecoder = json.NewSerializerWithOptions(json.DefaultMetaFactory, scheme.Scheme, scheme.Scheme,
	json.SerializerOptions{Yaml: false, Strict: true})

// decodeAll splits the rendered templates into objects and decodes each
// strictly: YAML with duplicate keys is refused, then every field must
// exist in the k8s.io/api type of its kind. Kinds k8s.io/api does not
// have (ServiceMonitor) are kept unstructured and left to the API
// server's schema.
func decodeAll(t testing.TB, rendered map[string]string) []object {
	t.Helper()
	var files []string
	for f := range rendered {
		files = append(files, f)
	}
	sort.Strings(files)
	var out []object
	for _, f := range files {
		if strings.HasSuffix(f, "NOTES.txt") || strings.HasSuffix(f, ".tpl") {
			continue
		}
		for _, doc := range docSep.Split(rendered[f], -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			js, err := yaml.YAMLToJSONStrict([]byte(doc))
			if err != nil {
				t.Fatalf("%s: not strict YAML: %v\n%s", f, err, doc)
			}
			u := &unstructured.Unstructured{}
			if err := u.UnmarshalJSON(js); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			o := object{source: f, gvk: u.GroupVersionKind(), name: u.GetName(), json: js}
			if scheme.Scheme.Recognizes(o.gvk) {
				obj, _, err := strictDecoder.Decode(js, nil, nil)
				if err != nil {
					t.Fatalf("%s: %s %s does not decode strictly into k8s.io/api: %v", f, o.gvk.Kind, o.name, err)
				}
				o.typed = obj
			} else if o.gvk.Kind != "ServiceMonitor" {
				t.Fatalf("%s: %s is neither a k8s.io/api kind nor one the chart is known to use", f, o.gvk)
			}
			out = append(out, o)
		}
	}
	return out
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// lintChart runs Helm's own linter (what `helm lint --strict` runs) with
// the values, and fails on anything above INFO.
func lintChart(t testing.TB, vals map[string]any) {
	t.Helper()
	res := lint.RunAll(chartDir, vals, "lint")
	var bad bytes.Buffer
	for _, m := range res.Messages {
		if m.Severity > support.InfoSev {
			fmt.Fprintln(&bad, m)
		}
	}
	if bad.Len() > 0 {
		t.Fatalf("helm lint:\n%s", bad.String())
	}
}
