package policy

import (
	"strings"
	"testing"
)

const weightsSHA = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func storedDoc(t *testing.T) map[string]any {
	d := psiDoc(t)
	d["inputs"] = append(d["inputs"].([]any), map[string]any{
		"name": "weights.bin", "sha256": weightsSHA,
		"from": map[string]any{"digest": "sha256:" + weightsSHA, "stores": []any{"http://127.0.0.1:7444/models", "https://registry.example/mirror/models"}},
	})
	return d
}

func TestStoredInput(t *testing.T) {
	t.Parallel()
	p := mustParse(t, storedDoc(t))
	w, ok := p.Input("weights.bin")
	if !ok || !w.Stored() || w.From.Stores[1] != "https://registry.example/mirror/models" {
		t.Fatalf("stored input: %+v", w)
	}
	if _, ok := p.InputProvider("weights.bin"); ok {
		t.Fatal("a stored input has no provider to upload it")
	}
	if h, ok := w.PinnedSHA256(); !ok || h[0] != 0x01 {
		t.Fatal("pin")
	}
	// Built in code, the same policy serializes to the same hash.
	q := *p
	q.canonical = nil
	if q.HashHex() != p.HashHex() {
		t.Fatal("hash of the built form differs")
	}
	// A pinned upload: provider plus sha256.
	d := psiDoc(t)
	in(d, 0)["sha256"] = weightsSHA
	if p := mustParse(t, d); p.Inputs[0].SHA256 != weightsSHA || p.Inputs[0].Stored() {
		t.Fatal("pinned upload")
	}
}

func TestStoredInputRules(t *testing.T) {
	t.Parallel()
	last := func(d map[string]any) map[string]any {
		ins := d["inputs"].([]any)
		return ins[len(ins)-1].(map[string]any)
	}
	from := func(d map[string]any) map[string]any { return last(d)["from"].(map[string]any) }
	cases := []struct {
		name     string
		mutate   func(d map[string]any)
		field    string
		fragment string
	}{
		{"provider and from", func(d map[string]any) { last(d)["provider"] = "bob" }, "inputs[2].provider", "not both"},
		{"from without pin", func(d map[string]any) { delete(last(d), "sha256") }, "inputs[2].sha256", "required with from"},
		{"digest not the pin", func(d map[string]any) { from(d)["digest"] = "sha256:" + strings.Repeat("f", 64) }, "inputs[2].from.digest", "must equal"},
		{"bad digest", func(d map[string]any) { from(d)["digest"] = "md5:00" }, "inputs[2].from.digest", "sha256"},
		{"no stores", func(d map[string]any) { from(d)["stores"] = []any{} }, "inputs[2].from.stores", "at least one"},
		{"bad store", func(d map[string]any) { from(d)["stores"] = []any{"ftp://x/y"} }, "inputs[2].from.stores[0]", "scheme"},
		{"store with credentials", func(d map[string]any) { from(d)["stores"] = []any{"https://u:p@x/y"} }, "inputs[2].from.stores[0]", "credentials"},
		{"store spelled twice ways", func(d map[string]any) { from(d)["stores"] = []any{"http://x/y/"} }, "inputs[2].from.stores[0]", "write it as"},
		{"store twice", func(d map[string]any) { from(d)["stores"] = []any{"http://x/y", "http://x/y"} }, "inputs[2].from.stores[1]", "twice"},
		{"missing stores field", func(d map[string]any) { delete(from(d), "stores") }, "inputs[2].from.stores", "required"},
		{"unknown field", func(d map[string]any) { from(d)["store"] = "x" }, "inputs[2].from.store", "unknown field"},
		{"upper-case pin", func(d map[string]any) { in(d, 0)["sha256"] = strings.ToUpper(weightsSHA) }, "inputs[0].sha256", "lowercase"},
		{"no provider, no from", func(d map[string]any) { delete(in(d, 0), "provider") }, "inputs[0].provider", "must name a principal"},
	}
	for _, c := range cases {
		d := storedDoc(t)
		c.mutate(d)
		ps := problemsOf(t, encode(t, d))
		if !hasProblem(ps, c.field, c.fragment) {
			t.Errorf("%s: problems %v, want %s: …%s…", c.name, ps, c.field, c.fragment)
		}
	}
}

// TestStoredDirectory: a stored input may be a pinned directory (its
// sha256 pins the directory manifest); the flag is part of the hash.
func TestStoredDirectory(t *testing.T) {
	t.Parallel()
	d := storedDoc(t)
	ins := d["inputs"].([]any)
	ins[len(ins)-1].(map[string]any)["from"].(map[string]any)["directory"] = true
	p := mustParse(t, d)
	w, _ := p.Input("weights.bin")
	if !w.From.Directory {
		t.Fatal("directory flag lost")
	}
	q := *p
	q.canonical = nil
	if q.HashHex() != p.HashHex() {
		t.Fatal("hash of the built form differs")
	}
	if plain := mustParse(t, storedDoc(t)); plain.HashHex() == p.HashHex() {
		t.Fatal("a directory and a file with the same pin hash alike")
	}
	ins[len(ins)-1].(map[string]any)["from"].(map[string]any)["directory"] = "yes"
	if ps := problemsOf(t, encode(t, d)); !hasProblem(ps, "inputs[2].from.directory", "") {
		t.Fatalf("a non-boolean directory flag: %v", ps)
	}
}
