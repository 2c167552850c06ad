package client_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/internal/fedexample/fedmodel"
	"github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/ledger/verify"
)

// Models decodes and checks each listed entry once per exact bytes, but
// reads everything the ledger says of a model every time: a revocation
// and a changed owner listed show at the next reading, and an entry
// whose signature fails is refused however often its good twin was read.
func TestModelsReadAgain(t *testing.T) {
	pub, k, _ := ed25519.GenerateKey(nil)
	owner := protocol.FormatEd25519Key(pub)
	m := fedmodel.Hospital("hospital-a/stats", 1, []byte("program"), []string{owner}, owner)
	se, err := verify.NewEntry(k, "model.published", m)
	if err != nil {
		t.Fatal(err)
	}
	good := se.Encode()
	// Its twin with another minimum of rows, under the same signature.
	forged := []byte(strings.Replace(string(good), `"min_rows":5`, `"min_rows":1`, 1))
	if string(forged) == string(good) {
		t.Fatalf("no forged twin of %s", good)
	}
	var mu sync.Mutex
	listed := map[string]any{"name": m.Name, "owner": owner, "version": 1, "index": 3, "revoked": 0, "nodes": m.Nodes,
		"functions": []string{}, "allow": []string{owner}, "budget": 0, "mode": "automatic", "calls": 0, "entry": json.RawMessage(good), "endpoints": []string{""}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false) // the entry's bytes as they are
		enc.Encode(map[string]any{"height": 9, "models": []any{listed}})
	}))
	defer srv.Close()
	set := func(k string, v any) {
		mu.Lock()
		defer mu.Unlock()
		listed[k] = v
	}
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for range 2 {
		l, err := c.Models(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := l.Model(m.Name); err != nil || got.Version != 1 || len(got.Functions) != len(m.Functions) {
			t.Fatalf("model: %+v %v", got, err)
		}
	}
	set("revoked", 5)
	l, err := c.Models(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Model(m.Name); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("a revoked model read again from a cached entry: %v", err)
	}
	set("revoked", 0)
	set("owner", "ed25519:"+strings.Repeat("A", 43)+"=")
	if _, err := c.Models(ctx); err == nil || !strings.Contains(err.Error(), "listed as published by") {
		t.Fatalf("another owner listed: %v", err)
	}
	set("owner", owner)
	set("entry", json.RawMessage(forged))
	for range 2 {
		if _, err := c.Models(ctx); err == nil {
			t.Fatal("a forged entry accepted")
		}
	}
	set("entry", json.RawMessage(good))
	set("version", 2)
	if _, err := c.Models(ctx); err == nil || !strings.Contains(err.Error(), "publishes") {
		t.Fatalf("a version listed that the entry does not publish: %v", err)
	}
}
