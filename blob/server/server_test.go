package server_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/blob/server"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/registrytest"
)

type fixture struct {
	srv  *server.Server
	ts   struct{ URL string }
	dir  string
	key  ed25519.PrivateKey
	repo string
}

func newFixture(t *testing.T, lim server.Limits) *fixture {
	t.Helper()
	st := registrytest.StartStore(t, server.Options{Limits: lim})
	f := &fixture{srv: st.Server, dir: st.Dir, key: st.Key}
	f.ts.URL = st.URL
	f.repo = f.ts.URL + "/cloister/programs"
	return f
}

func (f *fixture) store(t *testing.T, key ed25519.PrivateKey) *blob.Store {
	t.Helper()
	s, err := blob.OpenStore(f.repo, blob.Options{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func fetchTo(t *testing.T, loc blob.Location, d blob.Digest, max int64) ([]byte, *blob.Store, error) {
	t.Helper()
	return loc.FetchBytes(context.Background(), d, max)
}

func TestRoundTripAndDeterministicManifest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Limits{})
	ctx := context.Background()
	data := bytes.Repeat([]byte("weights "), 100000)
	p := writeFile(t, t.TempDir(), "w.bin", data)
	s := f.store(t, f.key)
	d, size, err := s.PushFile(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if d != blob.FromBytes(data) || size != int64(len(data)) {
		t.Fatalf("pushed %s %d, want %s %d", d, size, blob.FromBytes(data), len(data))
	}
	// Pushing again is a no-op that gives the same digest.
	if d2, _, err := s.PushFile(ctx, p); err != nil || d2 != d {
		t.Fatalf("second push: %v %s", err, d2)
	}
	reader := f.store(t, nil) // reads need no key
	got, from, err := fetchTo(t, blob.Location{reader}, d, 1<<30)
	if err != nil || !bytes.Equal(got, data) || from != reader {
		t.Fatalf("fetch: %v (equal %v)", err, bytes.Equal(got, data))
	}
	// The manifest is a pure function of the blob: its tag resolves to
	// the digest anyone can compute.
	m := blob.BlobManifest(d, size, blob.MediaTypeFile)
	if bytes.Contains(m, []byte("created")) {
		t.Fatalf("manifest carries a timestamp: %s", m)
	}
	got, err = reader.FetchManifest(ctx, blob.FromBytes(m))
	if err != nil || !bytes.Equal(got, m) {
		t.Fatalf("manifest by digest: %v\n%s\n%s", err, got, m)
	}
	resp, err := http.Get(f.ts.URL + "/v2/cloister/programs/manifests/" + d.Tag())
	if err != nil || resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != string(blob.FromBytes(m)) {
		t.Fatalf("manifest by tag: %v %v", err, resp)
	}
	resp.Body.Close()
}

func TestDirectory(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Limits{})
	ctx := context.Background()
	dir := t.TempDir()
	writeFile(t, dir, "b.csv", []byte("2,3\n"))
	writeFile(t, dir, "a.csv", []byte("1,2\n"))
	writeFile(t, dir, "empty", nil)
	md, err := f.store(t, f.key).PushDir(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := blob.Location{f.store(t, nil)}.FetchManifest(ctx, md)
	if err != nil {
		t.Fatal(err)
	}
	es, err := blob.ParseDirManifest(m)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 3 || es[0].Name != "a.csv" || es[0].Digest != blob.FromBytes([]byte("1,2\n")) || es[2].Name != "empty" || es[2].Size != 0 {
		t.Fatalf("entries %+v", es)
	}
	// The same directory gives the same manifest digest, pushed anywhere.
	again, _ := blob.DirManifest([]blob.DirEntry{es[2], es[1], es[0]})
	if blob.FromBytes(again) != md {
		t.Fatal("directory manifest depends on the order of entries")
	}
	os.Mkdir(filepath.Join(dir, "sub"), 0o755)
	if _, err := f.store(t, f.key).PushDir(ctx, dir); err == nil || !strings.Contains(err.Error(), "flat") {
		t.Fatalf("directory with a subdirectory: %v", err)
	}
	// A manifest that is valid JSON but not canonical is refused.
	if _, err := blob.ParseDirManifest(bytes.Replace(m, []byte(`"schemaVersion":2`), []byte(`"schemaVersion": 2`), 1)); err == nil {
		t.Fatal("non-canonical directory manifest accepted")
	}
}

func TestWritesAuthenticated(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Limits{})
	ctx := context.Background()
	p := writeFile(t, t.TempDir(), "x", []byte("x"))
	_, stranger, _ := ed25519.GenerateKey(nil)
	for name, s := range map[string]*blob.Store{"unsigned": f.store(t, nil), "stranger": f.store(t, stranger)} {
		_, _, err := s.PushFile(ctx, p)
		if !errors.Is(err, blob.ErrRefused) {
			t.Errorf("%s push: %v, want ErrRefused", name, err)
		}
	}
	// A stale signature is refused; so is a replayed one.
	old, _ := blob.OpenStore(f.repo, blob.Options{Key: f.key, Now: func() time.Time { return time.Now().Add(-time.Hour) }})
	if _, _, err := old.PushFile(ctx, p); !errors.Is(err, blob.ErrRefused) || !strings.Contains(err.Error(), "clock") {
		t.Errorf("stale push: %v", err)
	}
	req, _ := http.NewRequest(http.MethodPost, f.repo[:strings.Index(f.repo, "/cloister")]+"/v2/cloister/programs/blobs/uploads/", nil)
	req.Header.Set("Authorization", blob.SignRequest(f.key, req.Method, req.URL.Host, req.URL.RequestURI(), time.Now()))
	for i, want := range []int{http.StatusAccepted, http.StatusUnauthorized} {
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != want {
			t.Fatalf("request %d: %v %v, want %d", i, err, resp.Status, want)
		}
		resp.Body.Close()
	}
	// Nothing of the refused pushes was kept.
	if ok, _ := f.store(t, nil).Exists(ctx, blob.FromBytes([]byte("x"))); ok {
		t.Fatal("a refused push left the blob")
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Limits{MaxBlob: 1000, DefaultQuota: 1500, UploadsPerCaller: 1})
	ctx := context.Background()
	dir := t.TempDir()
	s := f.store(t, f.key)
	_, _, err := s.PushFile(ctx, writeFile(t, dir, "big", make([]byte, 1001)))
	if !errors.Is(err, blob.ErrRefused) || !strings.Contains(err.Error(), "max_blob") {
		t.Fatalf("oversized blob: %v", err)
	}
	if _, _, err := s.PushFile(ctx, writeFile(t, dir, "a", bytes.Repeat([]byte{1}, 900))); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.PushFile(ctx, writeFile(t, dir, "b", bytes.Repeat([]byte{2}, 900)))
	if !errors.Is(err, blob.ErrRefused) || !strings.Contains(err.Error(), "quota") {
		t.Fatalf("over quota: %v", err)
	}
	// One upload at a time per caller.
	post := func() int {
		req, _ := http.NewRequest(http.MethodPost, f.ts.URL+"/v2/cloister/programs/blobs/uploads/", nil)
		req.Header.Set("Authorization", blob.SignRequest(f.key, req.Method, req.URL.Host, req.URL.RequestURI(), time.Now()))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if a, b := post(), post(); a != http.StatusAccepted || b != http.StatusTooManyRequests {
		t.Fatalf("two uploads at once: %d then %d", a, b)
	}
}

func TestFetchAcrossStores(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	good := newFixture(t, server.Limits{})
	bad := newFixture(t, server.Limits{})
	data := []byte("public dataset v1")
	d := blob.FromBytes(data)
	p := writeFile(t, t.TempDir(), "ds", data)
	if _, _, err := good.store(t, good.key).PushFile(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, _, err := bad.store(t, bad.key).PushFile(ctx, p); err != nil {
		t.Fatal(err)
	}
	// The bad store's copy is altered on disk: same size, other bytes.
	h := d.Hex()
	if err := os.WriteFile(filepath.Join(bad.dir, "blobs", "sha256", h[:2], h), []byte("public dataset v2"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := newFixture(t, server.Limits{})
	// A store that is down: a listener closed at once.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	down := "http://" + ln.Addr().String() + "/cloister/programs"
	ln.Close()
	loc, err := blob.OpenLocation([]string{down, empty.repo, bad.repo, good.repo}, blob.Options{})
	if err != nil {
		t.Fatal(err)
	}
	got, from, err := loc.FetchBytes(ctx, d, 1<<20)
	if err != nil || !bytes.Equal(got, data) || from.URL() != good.repo {
		t.Fatalf("fetch: %q from %v: %v", got, from, err)
	}
	// Without the good store: each failure is named, and the mismatch is
	// reported as such.
	_, _, err = loc[:3].FetchBytes(ctx, d, 1<<20)
	var fe *blob.FetchError
	if !errors.As(err, &fe) || len(fe.Attempts) != 3 || !errors.Is(err, blob.ErrMismatch) || errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("fetch without the good store: %v", err)
	}
	if !errors.Is(fe.Attempts[0].Err, blob.ErrUnavailable) || !errors.Is(fe.Attempts[1].Err, blob.ErrNotFound) {
		t.Fatalf("attempts: %v", fe.Attempts)
	}
	// Missing everywhere: ErrNotFound.
	_, _, err = loc[1:2].FetchBytes(ctx, blob.FromBytes([]byte("nothing")), 1<<20)
	if !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf("missing blob: %v", err)
	}
	// Larger than the caller allows: refused before reading.
	_, _, err = loc[3:].FetchBytes(ctx, d, 5)
	if !errors.Is(err, blob.ErrTooLarge) {
		t.Fatalf("limit: %v", err)
	}
	// Streaming into files: a failed copy leaves nothing behind.
	out := filepath.Join(t.TempDir(), "ds")
	_, _, err = loc[:3].Fetch(ctx, d, 0, func(int64) (blob.Sink, error) { return atomicfile.Create(out, 0o600) })
	if err == nil {
		t.Fatal("fetch succeeded from bad stores")
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
		t.Fatalf("failed fetch left %v", ents)
	}
}

func TestProtocolErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Limits{})
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/v2/", 200},
		{"GET", "/v2/Bad_Name/blobs/sha256:" + strings.Repeat("0", 64), 400},
		{"GET", "/v2/ok/blobs/md5:abc", 400},
		{"GET", "/v2/ok/blobs/sha256:" + strings.Repeat("0", 64), 404},
		{"DELETE", "/v2/ok/blobs/sha256:" + strings.Repeat("0", 64), 405},
		{"GET", "/v2/_catalog", 404},
		{"PUT", "/v2/ok/blobs/uploads/" + strings.Repeat("a", 32) + "?digest=sha256:" + strings.Repeat("0", 64), 401},
		{"GET", "/v2/ok/manifests/..", 400},
	} {
		req, _ := http.NewRequest(c.method, f.ts.URL+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, resp.StatusCode, body, c.want)
		}
	}
}

// TestRepositoryNamesLikeRoutes: a repository whose name holds "blobs",
// "manifests" or "uploads" as a component is routed by the end of the
// path, like any other (a push to "bench/blobs" once ended at a 405).
func TestRepositoryNamesLikeRoutes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, server.Limits{})
	ctx := context.Background()
	dir := t.TempDir()
	for i, repo := range []string{"bench/blobs", "a/manifests/b", "blobs/uploads", "x/blobs/uploads/y", "manifests"} {
		s, err := blob.OpenStore(f.ts.URL+"/"+repo, blob.Options{Key: f.key})
		if err != nil {
			t.Fatal(err)
		}
		data := []byte(fmt.Sprintf("blob of %s", repo))
		d, _, err := s.PushFile(ctx, writeFile(t, dir, fmt.Sprint(i), data))
		if err != nil {
			t.Fatalf("%s: push: %v", repo, err)
		}
		if got, _, err := fetchTo(t, blob.Location{s}, d, 1<<20); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s: fetch: %v", repo, err)
		}
		m := blob.BlobManifest(d, int64(len(data)), blob.MediaTypeFile)
		if got, err := s.FetchManifest(ctx, blob.FromBytes(m)); err != nil || !bytes.Equal(got, m) {
			t.Fatalf("%s: manifest: %v", repo, err)
		}
	}
}
