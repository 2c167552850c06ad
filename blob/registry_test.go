package blob_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/internal/registrytest"
	"github.com/cloisterhq/cloister/sealed"
)

// TestRealRegistry pushes a sealed program, a public file and a directory
// to a real distribution registry and fetches them back through a location
// whose first store is down.
func TestRealRegistry(t *testing.T) {
	t.Parallel()
	base := registrytest.Start(t)
	ctx := context.Background()
	repo := base + "/cloister/programs"
	s, err := blob.OpenStore(repo, blob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plain := bytes.Repeat([]byte("wasm bytes "), 30000)
	sealedPath := filepath.Join(dir, "p.sealed")
	f, _ := os.Create(sealedPath)
	key, sum, err := sealed.Seal(f, bytes.NewReader(plain))
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	d, size, err := s.PushFile(ctx, sealedPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(d) != sum.Digest || size != sum.Size {
		t.Fatalf("pushed %s (%d), seal said %s (%d)", d, size, sum.Digest, sum.Size)
	}
	// The registry resolves the tag to the deterministic manifest, which
	// it accepted as an OCI artifact manifest.
	want := blob.FromBytes(blob.BlobManifest(d, size, blob.MediaTypeSealed))
	req, _ := http.NewRequest(http.MethodHead, base+"/v2/cloister/programs/manifests/"+d.Tag(), nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != string(want) {
		t.Fatalf("tag %s: %v %v, want manifest %s", d.Tag(), err, resp, want)
	}

	loc, err := blob.OpenLocation([]string{"http://127.0.0.1:1/down", repo}, blob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ct, from, err := loc.FetchBytes(ctx, d, 1<<30)
	if err != nil || from.URL() != repo {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, _, err := sealed.Open(&out, bytes.NewReader(ct), key, nil); err != nil || !bytes.Equal(out.Bytes(), plain) {
		t.Fatalf("open fetched ciphertext: %v", err)
	}

	// A directory: manifest through the registry's manifest endpoint.
	dd := filepath.Join(dir, "ds")
	os.Mkdir(dd, 0o755)
	os.WriteFile(filepath.Join(dd, "train.csv"), []byte("x,y\n1,2\n"), 0o644)
	os.WriteFile(filepath.Join(dd, "test.csv"), []byte("x,y\n3,4\n"), 0o644)
	md, err := s.PushDir(ctx, dd)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := loc.FetchManifest(ctx, md)
	if err != nil {
		t.Fatal(err)
	}
	es, err := blob.ParseDirManifest(m)
	if err != nil || len(es) != 2 || es[0].Name != "test.csv" {
		t.Fatalf("directory: %v %+v", err, es)
	}
	// Missing and wrong-digest requests are refused by the real registry
	// the same way as by ours.
	if _, _, err := loc[1:].FetchBytes(ctx, blob.FromBytes([]byte("absent")), 1<<20); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing blob: %v", err)
	}
	if err := s.PushBlob(ctx, blob.FromBytes([]byte("claimed")), 5, bytes.NewReader([]byte("other"))); err == nil {
		t.Fatal("registry accepted bytes under another digest")
	}
}
