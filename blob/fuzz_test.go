package blob

import (
	"bytes"
	"crypto/ed25519"
	"testing"
	"time"
)

// FuzzParseDirManifest: a directory manifest comes from any store. It is
// parsed or refused, never a panic, and what is accepted is exactly what
// DirManifest writes for the entries it yields (one form).
func FuzzParseDirManifest(f *testing.F) {
	m, err := DirManifest([]DirEntry{{Name: "a.csv", Digest: FromBytes([]byte("a")), Size: 1}, {Name: "b", Digest: FromBytes(nil), Size: 0}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(m)
	f.Add([]byte(`{}`))
	f.Add(BlobManifest(FromBytes([]byte("x")), 1, "application/octet-stream"))
	f.Fuzz(func(t *testing.T, b []byte) {
		es, err := ParseDirManifest(b)
		if err != nil {
			return
		}
		again, err := DirManifest(es)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted a manifest DirManifest does not write again: %v", err)
		}
	})
}

// FuzzVerifyRequest: the Authorization header of a request to a store is
// the first thing the store reads from anyone. It is refused or verified,
// never a panic; a header that verifies was signed by the key it names
// over this very request.
func FuzzVerifyRequest(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(nil)
	f.Add(SignRequest(priv, "PUT", "127.0.0.1:7444", "/v2/p/blobs/uploads/", time.Unix(1e9, 0)), "PUT", "127.0.0.1:7444", "/v2/p/blobs/uploads/")
	f.Add("", "GET", "h", "/")
	f.Fuzz(func(t *testing.T, header, method, host, uri string) {
		r, err := VerifyRequest(header, method, host, uri)
		if err != nil {
			return
		}
		if len(r.Key) != ed25519.PublicKeySize {
			t.Fatalf("verified with a %d-byte key", len(r.Key))
		}
	})
}
