package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Media and artifact types of what Cloister pushes.
const (
	// ArtifactBlob is the artifact type of the manifest that holds one blob.
	ArtifactBlob = "application/vnd.cloister.blob.v1"
	// ArtifactDirectory is the artifact type of a directory manifest.
	ArtifactDirectory = "application/vnd.cloister.directory.v1"
	// MediaTypeSealed marks a layer that is a Cloister sealed file.
	MediaTypeSealed = "application/vnd.cloister.sealed.v1"
	// MediaTypeFile marks any other file.
	MediaTypeFile = "application/octet-stream"
)

// Limits on directory manifests, so that a hostile one costs bounded work.
const (
	MaxDirFiles    = 4096
	MaxManifestLen = 4 << 20
)

// sealedMagic starts every Cloister sealed file (package sealed).
var sealedMagic = []byte("age-encryption.org/v1\n-> cloister-v1\n")

// emptyConfig is the OCI empty descriptor every Cloister manifest uses as
// its config: artifacts carry no image configuration.
var emptyConfig = ocispec.DescriptorEmptyJSON

// manifestBytes encodes m; encoding/json writes struct fields in
// declaration order and map keys sorted, so equal manifests give equal
// bytes, hence equal digests.
func manifestBytes(m *ocispec.Manifest) []byte {
	b, err := json.Marshal(m)
	if err != nil {
		panic("blob: marshalling a manifest cannot fail: " + err.Error())
	}
	return b
}

// BlobManifest returns the manifest Push stores next to blob d: no
// timestamps, no annotations, so it depends on (d, size, media type) only.
func BlobManifest(d Digest, size int64, mediaType string) []byte {
	return manifestBytes(&ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactBlob,
		Config:       emptyConfig,
		Layers:       []ocispec.Descriptor{{MediaType: mediaType, Digest: digest.Digest(d), Size: size}},
	})
}

// PushManifest uploads manifest bytes and tags them.
func (s *Store) PushManifest(ctx context.Context, manifest []byte, tag string) (Digest, error) {
	d := FromBytes(manifest)
	if err := s.pushConfig(ctx); err != nil {
		return "", err
	}
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: digest.Digest(d), Size: int64(len(manifest))}
	if err := s.repo.Manifests().PushReference(ctx, desc, bytes.NewReader(manifest), tag); err != nil {
		return "", s.wrap("pushing manifest", d, err)
	}
	return d, nil
}

func (s *Store) pushConfig(ctx context.Context) error {
	return s.PushBlob(ctx, Digest(emptyConfig.Digest), emptyConfig.Size, bytes.NewReader(emptyConfig.Data))
}

// FetchManifest fetches the manifest d (at most MaxManifestLen bytes) and
// checks its digest.
func (s *Store) FetchManifest(ctx context.Context, d Digest) ([]byte, error) {
	desc, rc, err := s.repo.Manifests().FetchReference(ctx, string(d))
	if err != nil {
		return nil, s.wrap("fetching manifest", d, err)
	}
	defer rc.Close()
	if desc.Size > MaxManifestLen {
		return nil, fmt.Errorf("%s: manifest %s is %d bytes: %w of %d", s.url, d, desc.Size, ErrTooLarge, MaxManifestLen)
	}
	b, err := io.ReadAll(io.LimitReader(rc, MaxManifestLen+1))
	if err != nil {
		return nil, fmt.Errorf("%s: reading manifest %s: %w: %v", s.url, d, ErrUnavailable, err)
	}
	if got := FromBytes(b); got != d {
		return nil, fmt.Errorf("%s: served a manifest hashing to %s for %s: %w", s.url, got, d, ErrMismatch)
	}
	return b, nil
}

// FileDigest hashes the file at path.
func FileDigest(path string) (Digest, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, fmt.Errorf("%s: %w", path, err)
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return FromSum(s), n, nil
}

// PushFile uploads the file at path as a blob, with its manifest tagged
// "sha256-<hex>", and returns its digest and size. The file is read twice
// (hash, then upload), never held in memory.
func (s *Store) PushFile(ctx context.Context, path string) (Digest, int64, error) {
	d, size, mt, err := s.pushFileBlob(ctx, path)
	if err != nil {
		return "", 0, err
	}
	if _, err := s.PushManifest(ctx, BlobManifest(d, size, mt), d.Tag()); err != nil {
		return "", 0, err
	}
	return d, size, nil
}

func (s *Store) pushFileBlob(ctx context.Context, path string) (Digest, int64, string, error) {
	d, size, err := FileDigest(path)
	if err != nil {
		return "", 0, "", err
	}
	f, err := os.Open(path)
	if err != nil {
		return "", 0, "", err
	}
	defer f.Close()
	head := make([]byte, len(sealedMagic))
	n, _ := io.ReadFull(f, head)
	mt := MediaTypeFile
	if n == len(head) && bytes.Equal(head, sealedMagic) {
		mt = MediaTypeSealed
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, "", err
	}
	if err := s.PushBlob(ctx, d, size, f); err != nil {
		return "", 0, "", err
	}
	return d, size, mt, nil
}

// DirEntry is one file of a directory manifest.
type DirEntry struct {
	Name   string
	Digest Digest
	Size   int64
}

// DirManifest returns the manifest of a directory: one layer per file, in
// name order, each named by the standard title annotation. Its digest is
// what a policy pins for the directory.
func DirManifest(entries []DirEntry) ([]byte, error) {
	es := append([]DirEntry(nil), entries...)
	sort.Slice(es, func(i, j int) bool { return es[i].Name < es[j].Name })
	if err := checkEntries(es); err != nil {
		return nil, err
	}
	m := &ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactDirectory,
		Config:       emptyConfig,
		Layers:       []ocispec.Descriptor{},
	}
	for _, e := range es {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: MediaTypeFile, Digest: digest.Digest(e.Digest), Size: e.Size,
			Annotations: map[string]string{ocispec.AnnotationTitle: e.Name}})
	}
	return manifestBytes(m), nil
}

// ParseDirManifest reads a directory manifest, refusing anything
// DirManifest would not have produced from the same entries.
func ParseDirManifest(b []byte) ([]DirEntry, error) {
	if len(b) > MaxManifestLen {
		return nil, fmt.Errorf("directory manifest: %d bytes: %w of %d", len(b), ErrTooLarge, MaxManifestLen)
	}
	var m ocispec.Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("directory manifest: %w", err)
	}
	if m.ArtifactType != ArtifactDirectory {
		return nil, fmt.Errorf("directory manifest: artifact type %q, want %q", truncate(m.ArtifactType), ArtifactDirectory)
	}
	var es []DirEntry
	for _, l := range m.Layers {
		d, err := ParseDigest(string(l.Digest))
		if err != nil {
			return nil, fmt.Errorf("directory manifest: %w", err)
		}
		es = append(es, DirEntry{Name: l.Annotations[ocispec.AnnotationTitle], Digest: d, Size: l.Size})
	}
	again, err := DirManifest(es)
	if err != nil {
		return nil, fmt.Errorf("directory manifest: %w", err)
	}
	if !bytes.Equal(again, b) {
		return nil, fmt.Errorf("directory manifest: not in canonical form (fields, order or annotations differ from what Cloister writes)")
	}
	return es, nil
}

func checkEntries(es []DirEntry) error {
	if len(es) > MaxDirFiles {
		return fmt.Errorf("%d files, at most %d", len(es), MaxDirFiles)
	}
	for i, e := range es {
		if err := CheckFileName(e.Name); err != nil {
			return err
		}
		if i > 0 && es[i-1].Name == e.Name {
			return fmt.Errorf("file %q listed twice", e.Name)
		}
		if _, err := ParseDigest(string(e.Digest)); err != nil {
			return fmt.Errorf("file %q: %w", e.Name, err)
		}
		if e.Size < 0 {
			return fmt.Errorf("file %q: negative size", e.Name)
		}
	}
	return nil
}

// CheckFileName accepts what a guest can see as /input/DIR/NAME: 1 to 255
// bytes, not . or .., no / or \, no control characters.
func CheckFileName(name string) error {
	switch {
	case name == "" || len(name) > 255:
		return fmt.Errorf("file name %q: 1 to 255 bytes", truncate(name))
	case name == "." || name == "..":
		return fmt.Errorf("file name %q is not a plain name", name)
	case strings.ContainsAny(name, "/\\"):
		return fmt.Errorf("file name %q: no / or \\", truncate(name))
	}
	for _, c := range name {
		if c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0) {
			return fmt.Errorf("file name %q: control character %U", truncate(name), c)
		}
	}
	return nil
}

// PushDir uploads every regular file of the flat directory dir and its
// directory manifest (tagged with its own digest's tag), and returns the
// manifest's digest. Subdirectories, links and special files are refused.
func (s *Store) PushDir(ctx context.Context, dir string) (Digest, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	var es []DirEntry
	for _, e := range ents {
		if !e.Type().IsRegular() {
			return "", fmt.Errorf("%s: %s is not a regular file; a stored directory is flat", dir, e.Name())
		}
		d, size, _, err := s.pushFileBlob(ctx, filepath.Join(dir, e.Name()))
		if err != nil {
			return "", err
		}
		es = append(es, DirEntry{Name: e.Name(), Digest: d, Size: size})
	}
	m, err := DirManifest(es)
	if err != nil {
		return "", fmt.Errorf("%s: %w", dir, err)
	}
	md := FromBytes(m)
	if _, err := s.PushManifest(ctx, m, md.Tag()); err != nil {
		return "", err
	}
	return md, nil
}

// FetchManifest fetches manifest d from the first store that serves it
// with the right digest.
func (l Location) FetchManifest(ctx context.Context, d Digest) ([]byte, *Store, error) {
	fe := &FetchError{Digest: d}
	for _, s := range l {
		b, err := s.FetchManifest(ctx, d)
		if err == nil {
			return b, s, nil
		}
		fe.Attempts = append(fe.Attempts, Attempt{Store: s.url, Err: err})
	}
	return nil, nil, fe
}
