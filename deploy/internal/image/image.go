package image

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Paths and ids inside the image. The chart relies on them.
const (
	BinDir   = "/usr/local/bin"
	DataDir  = "/var/lib/cloister"
	UID, GID = 65532, 65532
	// Repository is the image name recorded in the archive's index, so
	// that an engine importing the archive names it.
	Repository = "cloisterhq/cloister"
)

// binaries are the commands the image holds, built from the main module.
var binaries = []string{"cloister", "cloister-isolate"}

// Source describes the commit being built.
type Source struct {
	// Root is the main module's directory (the repository root).
	Root string
	// Version is what the image is tagged with (git describe).
	Version string
	// Commit is the full commit hash; Dirty says the tree had changes.
	Commit string
	Dirty  bool
	// Epoch is the time every file carries (the commit's time unless
	// SOURCE_DATE_EPOCH says otherwise).
	Epoch time.Time
}

// Options configure Build.
type Options struct {
	Source Source
	// GOARCH of the binaries (default: the Go toolchain's own).
	GOARCH string
	// Log receives one line per step; nil discards them.
	Log io.Writer
}

// Result is what Build produced.
type Result struct {
	// Digest is the image manifest's digest, "sha256:…".
	Digest string
	// Ref is the name the archive's index gives the image.
	Ref string
	// Labels are the image configuration's labels.
	Labels map[string]string
}

// DescribeSource reads version, commit and time of the checkout at root
// from git, honouring SOURCE_DATE_EPOCH when it is set.
func DescribeSource(ctx context.Context, root string) (Source, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", root}, args...)...)
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out)), nil
	}
	s := Source{Root: root}
	var err error
	if s.Commit, err = git("rev-parse", "HEAD"); err != nil {
		return s, err
	}
	if s.Version, err = git("describe", "--tags", "--always", "--abbrev=12"); err != nil {
		return s, err
	}
	status, err := git("status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return s, err
	}
	s.Dirty = status != ""
	if s.Dirty {
		s.Version += "-dirty"
	}
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		if epoch, err = git("log", "-1", "--format=%ct", "HEAD"); err != nil {
			return s, err
		}
	}
	sec, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return s, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
	}
	s.Epoch = time.Unix(sec, 0).UTC()
	return s, nil
}

// Build compiles the binaries and writes the image to out as an OCI image
// layout in a tar archive (what `docker load`, `podman load`, `ctr images
// import` and skopeo's oci-archive: read).
func Build(ctx context.Context, out string, opts Options) (*Result, error) {
	logf := func(format string, args ...any) {
		if opts.Log != nil {
			fmt.Fprintf(opts.Log, format+"\n", args...)
		}
	}
	src := opts.Source
	goarch := opts.GOARCH
	if goarch == "" {
		b, err := exec.CommandContext(ctx, "go", "env", "GOARCH").Output()
		if err != nil {
			return nil, fmt.Errorf("go env GOARCH: %w", err)
		}
		goarch = strings.TrimSpace(string(b))
	}
	gover, err := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOVERSION: %w", err)
	}
	work, err := os.MkdirTemp("", "cloister-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)

	files := map[string][]byte{}
	for _, b := range binaries {
		start := time.Now()
		bin := filepath.Join(work, b)
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
			"-ldflags=-s -w -buildid=", "-o", bin, "./cmd/"+b)
		cmd.Dir = src.Root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch, "GOFLAGS=")
		cmd.Stderr = opts.Log
		if opts.Log == nil {
			cmd.Stderr = io.Discard
		}
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("building %s: %w", b, err)
		}
		if files[BinDir+"/"+b], err = os.ReadFile(bin); err != nil {
			return nil, err
		}
		logf("built %s (%d bytes, %s)", b, len(files[BinDir+"/"+b]), time.Since(start).Round(time.Millisecond))
	}
	licence, err := os.ReadFile(filepath.Join(src.Root, "LICENSE"))
	if err != nil {
		return nil, err
	}
	files["/usr/share/doc/cloister/LICENSE"] = licence

	layerTar, err := rootfsLayer(files, src.Epoch)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	labels := map[string]string{
		"org.opencontainers.image.title":       "cloister",
		"org.opencontainers.image.description": "Confidential, verifiable computation: cloister and its jailed isolate worker",
		"org.opencontainers.image.version":     src.Version,
		"org.opencontainers.image.revision":    src.Commit,
		"org.opencontainers.image.created":     src.Epoch.Format(time.RFC3339),
		"org.opencontainers.image.licenses":    licenceID(licence),
		"org.opencontainers.image.source":      "github.com/cloisterhq/cloister",
		"dev.cloister.go.version":              strings.TrimSpace(string(gover)),
		"dev.cloister.build.flags":             "CGO_ENABLED=0 -trimpath -buildvcs=false -ldflags=-s -w -buildid=",
		"dev.cloister.source.dirty":            strconv.FormatBool(src.Dirty),
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History: v1.History{
			Created:   v1.Time{Time: src.Epoch},
			CreatedBy: "deploy/build-image: cloister, cloister-isolate (static), passwd, data directory",
			Comment:   "built from " + src.Commit,
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = goarch, "linux"
	cf.Created = v1.Time{Time: src.Epoch}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", UID, GID),
		Entrypoint: []string{BinDir + "/cloister"},
		Cmd:        []string{"--help"},
		WorkingDir: DataDir,
		Env: []string{
			"PATH=" + BinDir + ":/usr/bin:/bin",
			"CLOISTER_DATA=" + DataDir,
			"HOME=" + DataDir,
		},
		Labels: labels,
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	digest, err := img.Digest()
	if err != nil {
		return nil, err
	}
	ref := Repository + ":" + src.Version
	if err := WriteArchive(img, ref, src.Epoch, out); err != nil {
		return nil, err
	}
	logf("wrote %s (%s)", out, ref)
	return &Result{Digest: digest.String(), Ref: ref, Labels: labels}, nil
}

// WriteArchive writes img as an OCI image layout packed into a tar archive
// at out, the index naming it ref ("repository:tag"), every entry dated
// epoch.
func WriteArchive(img v1.Image, ref string, epoch time.Time, out string) error {
	work, err := os.MkdirTemp("", "cloister-layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	_, tag, _ := strings.Cut(ref, ":")
	lp, err := layout.Write(work, empty.Index)
	if err != nil {
		return err
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag,
		"io.containerd.image.name":          "docker.io/" + ref,
	})); err != nil {
		return err
	}
	return packDir(work, out, epoch)
}

// licenceID names the licence from the head of LICENSE.
func licenceID(text []byte) string {
	head := text[:min(len(text), 300)]
	switch s := strings.ToLower(string(head)); {
	case strings.Contains(s, "apache"):
		return "Apache-2.0"
	case strings.Contains(s, "mit"):
		return "MIT"
	default:
		return "LicenseRef-cloister"
	}
}

// rootfsLayer is the uncompressed layer: every directory and file in name
// order, owned by root except the data directory, all at epoch.
func rootfsLayer(files map[string][]byte, epoch time.Time) ([]byte, error) {
	files = cloneFiles(files)
	files["/etc/passwd"] = []byte(fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n"+
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"+
		"cloister:x:%d:%d:cloister:%s:/sbin/nologin\n", UID, GID, DataDir))
	files["/etc/group"] = []byte(fmt.Sprintf("root:x:0:\nnobody:x:65534:\ncloister:x:%d:\n", GID))
	type entry struct {
		name     string
		dir      bool
		mode     int64
		uid, gid int
	}
	entries := map[string]entry{
		"tmp":                {name: "tmp", dir: true, mode: 0o1777},
		DataDir[1:]:          {name: DataDir[1:], dir: true, mode: 0o700, uid: UID, gid: GID},
		"etc/ssl":            {name: "etc/ssl", dir: true, mode: 0o755},
		"proc":               {name: "proc", dir: true, mode: 0o555},
		"sys":                {name: "sys", dir: true, mode: 0o555},
		"dev":                {name: "dev", dir: true, mode: 0o755},
		"usr/share/cloister": {name: "usr/share/cloister", dir: true, mode: 0o755},
	}
	addParents := func(p string) {
		for d := filepath.Dir(p); d != "." && d != "/"; d = filepath.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = entry{name: d, dir: true, mode: 0o755}
			}
		}
	}
	for name := range entries {
		addParents(name)
	}
	for p := range files {
		name := strings.TrimPrefix(p, "/")
		mode := int64(0o644)
		if strings.HasPrefix(p, BinDir+"/") {
			mode = 0o755
		}
		entries[name] = entry{name: name, mode: mode}
		addParents(name)
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		h := &tar.Header{Name: n, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: epoch, Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, n+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(files["/"+n]))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if !e.dir {
			if _, err := tw.Write(files["/"+n]); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func cloneFiles(m map[string][]byte) map[string][]byte {
	c := make(map[string][]byte, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// packDir writes the directory tree at dir into a tar archive at out, in
// name order, every entry owned by root and dated epoch, through a
// temporary file renamed into place.
func packDir(dir, out string, epoch time.Time) error {
	var names []string
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			names = append(names, p)
		}
		return nil
	}); err != nil {
		return err
	}
	sort.Strings(names)
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tw := tar.NewWriter(tmp)
	for _, p := range names {
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Mode: 0o644, Typeflag: tar.TypeReg, Format: tar.FormatPAX}
		if fi.IsDir() {
			h.Name += "/"
			h.Mode, h.Typeflag = 0o755, tar.TypeDir
		} else {
			h.Size = fi.Size()
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.IsDir() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), out)
}
