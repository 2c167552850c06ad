package node_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// createRefused creates, on a node of its own, a session of the sum
// program's policy changed by mutate, and wants it refused with an error
// containing each of wants.
func createRefused(t *testing.T, mutate func(map[string]any), wants ...string) {
	t.Helper()
	s := newScenario(t)
	tn := startNode(t, filepath.Join(t.TempDir(), "node"), nil)
	wasm := readTestdata(t, "sum.wasm")
	doc := s.policyDoc(t, tn.platformKey(), func(m map[string]any) {
		m["name"] = "sum"
		m["programs"] = []any{map[string]any{"name": "sum.wasm", "sha256": sha256hex(wasm), "provider": "alice"}}
		mutate(m)
	})
	_, err := dial(t, tn).CreateSession(context.Background(), doc)
	for _, want := range wants {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("session created or refused for another reason: %v; want %q", err, want)
		}
	}
}

// A policy naming an engine this node cannot run (no
// cloister-isolate-wasmtime lies next to the test binary) is refused when
// the session is created, before anyone uploads to it, naming the engine
// and what is missing.
func TestPolicyEngineUnavailable(t *testing.T) {
	createRefused(t, func(m map[string]any) { m["engine"] = "wasmtime" },
		"asks for the wasmtime engine, which this node cannot run", "cloister-isolate-wasmtime")
}
