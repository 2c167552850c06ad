package server

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/blob"
	"github.com/cloisterhq/cloister/blob/addr"
	"github.com/cloisterhq/cloister/internal/atomicfile"
	"github.com/cloisterhq/cloister/internal/httpguard"
	"github.com/cloisterhq/cloister/keys"
)

// Limits bound what the store accepts. Zero fields take the defaults.
type Limits struct {
	MaxBlob          int64         // one blob, bytes (default 4 GiB)
	MaxTotal         int64         // all blobs and manifests, bytes (default 64 GiB)
	DefaultQuota     int64         // bytes a pusher may store unless Pushers says otherwise (default 16 GiB)
	UploadsPerCaller int           // concurrent uploads per pusher (default 4)
	UploadsTotal     int           // concurrent uploads in all (default 64)
	ReadsPerClient   int           // concurrent blob reads per client IP (default 16)
	ReadsTotal       int           // concurrent blob reads in all (default 256)
	UploadIdle       time.Duration // an upload with no request for this long is dropped (default 10m)
	// Conn bounds connections, headers and body pace (package httpguard);
	// zero fields take httpguard's defaults, except a 30-minute write
	// timeout so that large blobs can be read over slow links.
	Conn httpguard.Limits
}

func (l *Limits) fill() {
	def := func(p *int64, v int64) {
		if *p <= 0 {
			*p = v
		}
	}
	defi := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&l.MaxBlob, 4<<30)
	def(&l.MaxTotal, 64<<30)
	def(&l.DefaultQuota, 16<<30)
	defi(&l.UploadsPerCaller, 4)
	defi(&l.UploadsTotal, 64)
	defi(&l.ReadsPerClient, 16)
	defi(&l.ReadsTotal, 256)
	if l.UploadIdle <= 0 {
		l.UploadIdle = 10 * time.Minute
	}
	if l.Conn.WriteTimeout <= 0 {
		l.Conn.WriteTimeout = 30 * time.Minute
	}
}

// Options configures a Server.
type Options struct {
	// Dir holds the blobs; created if missing.
	Dir string
	// Pushers are the keys allowed to write, each with its quota in bytes
	// (0: Limits.DefaultQuota). With none, the store is read-only.
	Pushers map[string]int64 // "ed25519:…" → quota
	Limits  Limits
	Logger  *slog.Logger
	// Now is the clock for signature freshness; nil means time.Now.
	Now func() time.Time
}

// Server serves one blob directory.
type Server struct {
	dir     string
	lim     Limits
	log     *slog.Logger
	now     func() time.Time
	pushers map[string]int64 // canonical key → quota

	mu        sync.Mutex
	used      map[string]int64 // pusher → bytes stored (persisted in usage.json)
	total     int64            // bytes stored
	reserved  int64            // bytes of uploads in progress
	uploads   map[string]*upload
	byCaller  map[string]int // pusher → uploads in progress
	reads     map[string]int // client IP → reads in flight
	readsAll  int
	nonces    *protocol.ReplayWindow
	stop      chan struct{}
	closeOnce sync.Once
}

type upload struct {
	id, owner, repo string
	f               *atomicfile.File // placed by its digest when finished
	h               hash.Hash
	n               int64
	touched         time.Time
	busy            bool
}

// New opens (or creates) the store in opts.Dir. Uploads left by a previous
// process are removed: clients start them again.
func New(opts Options) (*Server, error) {
	s := &Server{dir: opts.Dir, lim: opts.Limits, log: opts.Logger, now: opts.Now, pushers: map[string]int64{},
		used: map[string]int64{}, uploads: map[string]*upload{}, byCaller: map[string]int{}, reads: map[string]int{},
		nonces: protocol.NewReplayWindow(1 << 20), stop: make(chan struct{})}
	s.lim.fill()
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.now == nil {
		s.now = time.Now
	}
	for k, q := range opts.Pushers {
		pub, err := keys.ParseSigningKey(k)
		if err != nil {
			return nil, fmt.Errorf("blob store: pusher %q: %w", k, err)
		}
		if q <= 0 {
			q = s.lim.DefaultQuota
		}
		s.pushers[keys.FormatSigningKey(pub)] = q
	}
	for _, d := range []string{"blobs", "manifests", "repos", "uploads"} {
		if err := os.MkdirAll(filepath.Join(s.dir, d), 0o700); err != nil {
			return nil, fmt.Errorf("blob store: %w", err)
		}
	}
	if err := os.RemoveAll(filepath.Join(s.dir, "uploads")); err != nil {
		return nil, fmt.Errorf("blob store: clearing old uploads: %w", err)
	}
	os.MkdirAll(filepath.Join(s.dir, "uploads"), 0o700)
	if err := s.loadUsage(); err != nil {
		return nil, err
	}
	go s.sweep()
	return s, nil
}

// Close stops the sweeper and drops uploads in progress.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		s.mu.Lock()
		defer s.mu.Unlock()
		for id, u := range s.uploads {
			if !u.busy { // a request's handler drops its own
				s.dropLocked(id, u)
			}
		}
	})
	return nil
}

// sweep drops idle uploads (the replay window forgets expired nonces as
// it admits new ones).
func (s *Server) sweep() {
	t := time.NewTicker(min(s.lim.UploadIdle/4, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		now := s.now()
		s.mu.Lock()
		for id, u := range s.uploads {
			if !u.busy && now.Sub(u.touched) > s.lim.UploadIdle {
				s.dropLocked(id, u)
			}
		}
		s.mu.Unlock()
	}
}

func (s *Server) dropLocked(id string, u *upload) {
	u.f.Abort()
	s.reserved -= u.n
	s.byCaller[u.owner]--
	if s.byCaller[u.owner] <= 0 {
		delete(s.byCaller, u.owner)
	}
	delete(s.uploads, id)
}

// usage.json: bytes stored per pusher; the total is recomputed from disk.
func (s *Server) loadUsage() error {
	b, err := os.ReadFile(filepath.Join(s.dir, "usage.json"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("blob store: %w", err)
	}
	if len(b) > 0 {
		if err := json.Unmarshal(b, &s.used); err != nil {
			return fmt.Errorf("blob store: usage.json: %w", err)
		}
	}
	for _, sub := range []string{"blobs", "manifests"} {
		err := filepath.WalkDir(filepath.Join(s.dir, sub), func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Type().IsRegular() {
				if fi, err := d.Info(); err == nil {
					s.total += fi.Size()
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("blob store: %w", err)
		}
	}
	return nil
}

// saveUsageLocked persists s.used; a crash between a blob's rename and this
// write only under-counts that blob for its pusher.
func (s *Server) saveUsageLocked() {
	b, _ := json.Marshal(s.used)
	if err := atomicfile.WriteFile(filepath.Join(s.dir, "usage.json"), b, 0o600); err != nil {
		s.log.Error("blob store: saving usage.json", "err", err)
	}
}

func (s *Server) blobPath(d blob.Digest) string {
	h := d.Hex()
	return filepath.Join(s.dir, "blobs", "sha256", h[:2], h)
}

func (s *Server) manifestPath(d blob.Digest) string {
	h := d.Hex()
	return filepath.Join(s.dir, "manifests", "sha256", h[:2], h)
}

func (s *Server) tagPath(repo, tag string) string {
	return filepath.Join(s.dir, "repos", filepath.FromSlash(repo), "_tags", tag)
}

// The OCI tag grammar (distribution-spec).
var (
	tagRE = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// Handler returns the HTTP handler.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(s.serve)
}

// Serve serves the store on ln under the connection limits (package
// httpguard) until hs is shut down; it returns what http.Server.Serve does.
func (s *Server) Serve(ln net.Listener) (hs *http.Server, errc <-chan error) {
	hs = httpguard.NewServer(s.Handler(), s.lim.Conn, nil, nil)
	ch := make(chan error, 1)
	go func() { ch <- hs.Serve(httpguard.Listen(ln, s.lim.Conn, nil)) }()
	return hs, ch
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-Api-Version", "registry/2.0")
	p := r.URL.Path
	if p == "/v2/" || p == "/v2" {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method %s not allowed", r.Method)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte("{}"))
		return
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok || len(p) > 1024 {
		ociError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint")
		return
	}
	// /v2/<name>/{blobs/<digest>, blobs/uploads/[<id>], manifests/<ref>},
	// read from the end: a repository name may itself hold "blobs" or
	// "manifests" as a component, a reference never holds "/".
	head, last := rest, ""
	if i := strings.LastIndexByte(rest, '/'); i >= 0 {
		head, last = rest[:i], rest[i+1:]
	}
	var repo, route string
	switch {
	case strings.HasSuffix(head, "/blobs/uploads"):
		repo, route = strings.TrimSuffix(head, "/blobs/uploads"), "upload"
	case strings.HasSuffix(head, "/blobs") && last == "uploads" && r.Method == http.MethodPost:
		repo, route, last = strings.TrimSuffix(head, "/blobs"), "upload", ""
	case strings.HasSuffix(head, "/blobs"):
		repo, route = strings.TrimSuffix(head, "/blobs"), "blob"
	case strings.HasSuffix(head, "/manifests"):
		repo, route = strings.TrimSuffix(head, "/manifests"), "manifest"
	}
	if route != "" {
		if !addr.ValidRepository(repo) {
			ociError(w, http.StatusBadRequest, "NAME_INVALID", "repository name %q is invalid", trunc(repo))
			return
		}
		switch route {
		case "upload":
			s.serveUpload(w, r, repo, last)
		case "blob":
			s.serveBlob(w, r, last)
		default:
			s.serveManifest(w, r, repo, last)
		}
		return
	}
	ociError(w, http.StatusNotFound, "NOT_FOUND", "no such endpoint (this store serves blobs, blob uploads and manifests only)")
}

// ociError writes the distribution-spec error body.
func ociError(w http.ResponseWriter, status int, code, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

func trunc(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// authorize checks a write's signature, freshness, nonce and that the key
// may push; it returns the pusher's canonical key.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		w.Header().Set("WWW-Authenticate", protocol.BlobAuthScheme)
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "writes must be signed (%s); reads are open", protocol.BlobAuthScheme)
		return "", false
	}
	sr, err := blob.VerifyRequest(h, r.Method, r.Host, r.URL.RequestURI())
	if err != nil {
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "%v", err)
		return "", false
	}
	now := s.now()
	if d := now.Sub(sr.Time); d > protocol.MaxRequestSkew || d < -protocol.MaxRequestSkew {
		ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "request dated %s is more than %s from the store's clock %s", sr.Time.UTC().Format(time.RFC3339), protocol.MaxRequestSkew, now.UTC().Format(time.RFC3339))
		return "", false
	}
	key := keys.FormatSigningKey(sr.Key)
	if _, ok := s.pushers[key]; !ok {
		ociError(w, http.StatusForbidden, "DENIED", "key %s may not write to this store", key)
		return "", false
	}
	var re *protocol.ReplayError
	if err := s.nonces.Admit(nil, []byte(sr.Nonce), now); errors.As(err, &re) {
		if re.Full {
			ociError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "limit: %v", err)
		} else {
			ociError(w, http.StatusUnauthorized, "UNAUTHORIZED", "request replays a nonce already seen")
		}
		return "", false
	}
	return key, true
}

// clientIP is the address reads are counted by.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request, ref string) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "blobs are read with GET or HEAD; uploads go to blobs/uploads/")
		return
	}
	d, err := blob.ParseDigest(ref)
	if err != nil {
		ociError(w, http.StatusBadRequest, "DIGEST_INVALID", "%v", err)
		return
	}
	s.serveFile(w, r, s.blobPath(d), d, "application/octet-stream")
}

func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, path string, d blob.Digest, ctype string) {
	f, err := os.Open(path)
	if err != nil {
		ociError(w, http.StatusNotFound, "BLOB_UNKNOWN", "%s is not in this store", d)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		ociError(w, http.StatusInternalServerError, "UNKNOWN", "%v", err)
		return
	}
	if r.Method == http.MethodGet {
		ip := clientIP(r)
		s.mu.Lock()
		if s.reads[ip] >= s.lim.ReadsPerClient || s.readsAll >= s.lim.ReadsTotal {
			per := s.reads[ip] >= s.lim.ReadsPerClient
			s.mu.Unlock()
			w.Header().Set("Retry-After", "1")
			if per {
				ociError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "limit reads_per_client (%d concurrent reads from %s) reached", s.lim.ReadsPerClient, ip)
			} else {
				ociError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "limit reads_total (%d concurrent reads) reached", s.lim.ReadsTotal)
			}
			return
		}
		s.reads[ip]++
		s.readsAll++
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.readsAll--
			if s.reads[ip]--; s.reads[ip] <= 0 {
				delete(s.reads, ip)
			}
			s.mu.Unlock()
		}()
	}
	w.Header().Set("Docker-Content-Digest", string(d))
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Etag", `"`+string(d)+`"`)
	w.Header().Set("Cache-Control", "max-age=31536000, immutable")
	http.ServeContent(w, r, "", fi.ModTime(), f)
}

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

var idRE = regexp.MustCompile(`^[0-9a-f]{32}$`)

func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request, repo, id string) {
	switch {
	case id == "" && r.Method == http.MethodPost:
		s.startUpload(w, r, repo)
	case id != "" && idRE.MatchString(id) && (r.Method == http.MethodPatch || r.Method == http.MethodPut || r.Method == http.MethodGet || r.Method == http.MethodDelete):
		s.continueUpload(w, r, repo, id)
	case id != "" && !idRE.MatchString(id):
		ociError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no upload %q", trunc(id))
	default:
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method %s not allowed here", r.Method)
	}
}

func (s *Server) uploadLocation(repo, id string) string {
	return "/v2/" + repo + "/blobs/uploads/" + id
}

func (s *Server) startUpload(w http.ResponseWriter, r *http.Request, repo string) {
	owner, ok := s.authorize(w, r)
	if !ok {
		return
	}
	// A "mount" request is answered as a plain upload (the spec's fallback):
	// blobs are shared by all repositories anyway.
	s.mu.Lock()
	switch {
	case s.byCaller[owner] >= s.lim.UploadsPerCaller:
		s.mu.Unlock()
		ociError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "limit uploads_per_caller (%d uploads in progress for %s) reached", s.lim.UploadsPerCaller, owner)
		return
	case len(s.uploads) >= s.lim.UploadsTotal:
		s.mu.Unlock()
		ociError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "limit uploads_total (%d uploads in progress) reached", s.lim.UploadsTotal)
		return
	}
	id := newID()
	// Placed under its digest by CommitTo; never over an existing blob.
	f, err := atomicfile.Create(filepath.Join(s.dir, "uploads", id), 0o600, atomicfile.NoReplace())
	if err != nil {
		s.mu.Unlock()
		ociError(w, http.StatusInternalServerError, "UNKNOWN", "creating upload: %v", err)
		return
	}
	dg := r.URL.Query().Get("digest")
	// A single-request upload is its request's from the start: the
	// sweeper leaves it alone however long the body takes.
	u := &upload{id: id, owner: owner, repo: repo, f: f, h: sha256.New(), touched: s.now(), busy: dg != ""}
	s.uploads[u.id] = u
	s.byCaller[owner]++
	s.mu.Unlock()
	if dg != "" {
		// Monolithic single-request upload.
		s.finishUpload(w, r, u, dg)
		return
	}
	w.Header().Set("Location", s.uploadLocation(repo, u.id))
	w.Header().Set("Docker-Upload-Uuid", u.id)
	w.Header().Set("Range", "0-0")
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
}

// claim takes an upload for one request; only its owner may continue it.
func (s *Server) claim(w http.ResponseWriter, r *http.Request, repo, id string) (*upload, bool) {
	owner, ok := s.authorize(w, r)
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.uploads[id]
	switch {
	case u == nil || u.repo != repo:
		ociError(w, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN", "no upload %s in %s (finished, cancelled or idle for more than %s)", id, repo, s.lim.UploadIdle)
		return nil, false
	case u.owner != owner:
		ociError(w, http.StatusForbidden, "DENIED", "upload %s belongs to another key", id)
		return nil, false
	case u.busy:
		ociError(w, http.StatusConflict, "BLOB_UPLOAD_INVALID", "upload %s has a request in progress", id)
		return nil, false
	}
	u.busy = true
	return u, true
}

func (s *Server) release(u *upload) {
	s.mu.Lock()
	u.busy = false
	u.touched = s.now()
	s.mu.Unlock()
}

func (s *Server) continueUpload(w http.ResponseWriter, r *http.Request, repo, id string) {
	u, ok := s.claim(w, r, repo, id)
	if !ok {
		return
	}
	switch r.Method {
	case http.MethodGet:
		s.release(u)
		w.Header().Set("Location", s.uploadLocation(repo, id))
		w.Header().Set("Range", rangeHeader(u.n))
		w.WriteHeader(http.StatusNoContent)
	case http.MethodDelete:
		s.mu.Lock()
		s.dropLocked(id, u)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		if cr := r.Header.Get("Content-Range"); cr != "" {
			var from, to int64
			if _, err := fmt.Sscanf(cr, "%d-%d", &from, &to); err != nil || from != u.n {
				s.release(u)
				w.Header().Set("Range", rangeHeader(u.n))
				ociError(w, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID", "Content-Range %q does not continue at byte %d", trunc(cr), u.n)
				return
			}
		}
		if err := s.appendBody(w, r, u); err != nil {
			return
		}
		s.release(u)
		w.Header().Set("Location", s.uploadLocation(repo, id))
		w.Header().Set("Range", rangeHeader(u.n))
		w.Header().Set("Docker-Upload-Uuid", id)
		w.WriteHeader(http.StatusAccepted)
	case http.MethodPut:
		s.finishUpload(w, r, u, r.URL.Query().Get("digest"))
	}
}

func rangeHeader(n int64) string {
	if n == 0 {
		return "0-0"
	}
	return "0-" + strconv.FormatInt(n-1, 10)
}

// appendBody adds the request body to the upload, within the blob size,
// the pusher's quota and the store's total; on failure it has answered and
// dropped the upload.
func (s *Server) appendBody(w http.ResponseWriter, r *http.Request, u *upload) error {
	// The body's pace is httpguard's business (Serve).
	buf := make([]byte, 256<<10)
	for {
		n, rerr := r.Body.Read(buf)
		if n > 0 {
			if err := s.reserve(u, int64(n)); err != nil {
				s.fail(w, u, http.StatusRequestEntityTooLarge, "SIZE_INVALID", err.Error())
				return err
			}
			if _, err := u.f.Write(buf[:n]); err != nil {
				s.fail(w, u, http.StatusInsufficientStorage, "UNKNOWN", "writing upload: "+err.Error())
				return err
			}
			u.h.Write(buf[:n])
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			s.fail(w, u, http.StatusBadRequest, "BLOB_UPLOAD_INVALID", "reading the body: "+rerr.Error())
			return rerr
		}
	}
}

// reserve counts n more bytes of u against the limits.
func (s *Server) reserve(u *upload, n int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case u.n+n > s.lim.MaxBlob:
		return fmt.Errorf("limit max_blob (%d bytes) exceeded", s.lim.MaxBlob)
	case s.used[u.owner]+s.inFlightLocked(u.owner)+n > s.pushers[u.owner]:
		return fmt.Errorf("limit quota of %s (%d bytes) exceeded: %d stored", u.owner, s.pushers[u.owner], s.used[u.owner])
	case s.total+s.reserved+n > s.lim.MaxTotal:
		return fmt.Errorf("limit max_total (%d bytes) exceeded: the store is full", s.lim.MaxTotal)
	}
	u.n += n
	s.reserved += n
	return nil
}

func (s *Server) inFlightLocked(owner string) int64 {
	var n int64
	for _, u := range s.uploads {
		if u.owner == owner {
			n += u.n
		}
	}
	return n
}

func (s *Server) fail(w http.ResponseWriter, u *upload, status int, code, msg string) {
	s.mu.Lock()
	s.dropLocked(u.id, u)
	s.mu.Unlock()
	ociError(w, status, code, "%s", msg)
}

func (s *Server) finishUpload(w http.ResponseWriter, r *http.Request, u *upload, dg string) {
	d, err := blob.ParseDigest(dg)
	if err != nil {
		s.fail(w, u, http.StatusBadRequest, "DIGEST_INVALID", err.Error())
		return
	}
	if err := s.appendBody(w, r, u); err != nil {
		return
	}
	var sum [32]byte
	copy(sum[:], u.h.Sum(nil))
	if blob.FromSum(sum) != d {
		s.fail(w, u, http.StatusBadRequest, "DIGEST_INVALID", fmt.Sprintf("upload of %d bytes hashes to %s, not %s; nothing was kept", u.n, blob.FromSum(sum), d))
		return
	}
	dst := s.blobPath(d)
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		s.fail(w, u, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	// Synced and linked into place outside the lock; the link fails if
	// another upload of the same blob got there first, so each blob is
	// counted once.
	err = u.f.CommitTo(dst)
	exists := errors.Is(err, fs.ErrExist)
	if err != nil && !exists {
		s.fail(w, u, http.StatusInternalServerError, "UNKNOWN", err.Error())
		return
	}
	s.mu.Lock()
	if !exists {
		s.total += u.n
		s.used[u.owner] += u.n
		s.saveUsageLocked()
	}
	s.dropLocked(u.id, u)
	s.mu.Unlock()
	s.log.Info("blob stored", "digest", d, "bytes", u.n, "pusher", u.owner, "new", !exists)
	w.Header().Set("Location", "/v2/"+u.repo+"/blobs/"+string(d))
	w.Header().Set("Docker-Content-Digest", string(d))
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

// Manifest media types the store accepts.
var manifestTypes = map[string]bool{
	"application/vnd.oci.image.manifest.v1+json": true,
	"application/vnd.oci.image.index.v1+json":    true,
}

func (s *Server) serveManifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		d, err := blob.ParseDigest(ref)
		if err != nil {
			if !tagRE.MatchString(ref) {
				ociError(w, http.StatusBadRequest, "MANIFEST_INVALID", "reference %q is neither a digest nor a tag", trunc(ref))
				return
			}
			b, err := os.ReadFile(s.tagPath(repo, ref))
			if err != nil {
				ociError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "no tag %q in %s", ref, repo)
				return
			}
			if d, err = blob.ParseDigest(string(b)); err != nil {
				ociError(w, http.StatusInternalServerError, "UNKNOWN", "tag %q: %v", ref, err)
				return
			}
		}
		b, err := os.ReadFile(s.manifestPath(d))
		if err != nil {
			ociError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "%s is not in this store", d)
			return
		}
		var m struct {
			MediaType string `json:"mediaType"`
		}
		json.Unmarshal(b, &m)
		s.serveFile(w, r, s.manifestPath(d), d, m.MediaType)
	case http.MethodPut:
		s.putManifest(w, r, repo, ref)
	default:
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "method %s not allowed on manifests", r.Method)
	}
}

func (s *Server) putManifest(w http.ResponseWriter, r *http.Request, repo, ref string) {
	owner, ok := s.authorize(w, r)
	if !ok {
		return
	}
	ct := r.Header.Get("Content-Type")
	if !manifestTypes[ct] {
		ociError(w, http.StatusBadRequest, "MANIFEST_INVALID", "media type %q not accepted (OCI image manifest or index only)", trunc(ct))
		return
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, blob.MaxManifestLen+1))
	if err != nil {
		ociError(w, http.StatusBadRequest, "MANIFEST_INVALID", "reading the body: %v", err)
		return
	}
	if len(b) > blob.MaxManifestLen {
		ociError(w, http.StatusRequestEntityTooLarge, "SIZE_INVALID", "limit max_manifest (%d bytes) exceeded", blob.MaxManifestLen)
		return
	}
	d := blob.FromBytes(b)
	tag := ""
	if rd, err := blob.ParseDigest(ref); err == nil {
		if rd != d {
			ociError(w, http.StatusBadRequest, "DIGEST_INVALID", "manifest hashes to %s, not %s", d, rd)
			return
		}
	} else if tagRE.MatchString(ref) {
		tag = ref
	} else {
		ociError(w, http.StatusBadRequest, "TAG_INVALID", "reference %q is neither a digest nor a tag", trunc(ref))
		return
	}
	var m struct {
		MediaType string `json:"mediaType"`
		Config    *ref0  `json:"config"`
		Layers    []ref0 `json:"layers"`
		Manifests []ref0 `json:"manifests"`
	}
	if err := json.Unmarshal(b, &m); err != nil || m.MediaType != ct {
		ociError(w, http.StatusBadRequest, "MANIFEST_INVALID", "not a JSON manifest whose mediaType is %q", ct)
		return
	}
	refs := append([]ref0{}, m.Layers...)
	if m.Config != nil {
		refs = append(refs, *m.Config)
	}
	for _, l := range refs {
		ld, err := blob.ParseDigest(l.Digest)
		if err != nil {
			ociError(w, http.StatusBadRequest, "MANIFEST_INVALID", "%v", err)
			return
		}
		fi, err := os.Stat(s.blobPath(ld))
		if err != nil || fi.Size() != l.Size {
			ociError(w, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", "blob %s (%d bytes) is not in this store; push it first", ld, l.Size)
			return
		}
	}
	for _, l := range m.Manifests {
		ld, err := blob.ParseDigest(l.Digest)
		if err != nil {
			ociError(w, http.StatusBadRequest, "MANIFEST_INVALID", "%v", err)
			return
		}
		if _, err := os.Stat(s.manifestPath(ld)); err != nil {
			ociError(w, http.StatusBadRequest, "MANIFEST_BLOB_UNKNOWN", "manifest %s is not in this store; push it first", ld)
			return
		}
	}
	dst := s.manifestPath(d)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Stat(dst); err != nil {
		if s.used[owner]+int64(len(b)) > s.pushers[owner] || s.total+s.reserved+int64(len(b)) > s.lim.MaxTotal {
			ociError(w, http.StatusRequestEntityTooLarge, "DENIED", "limit quota or max_total exceeded by a %d-byte manifest", len(b))
			return
		}
		if err := writeAtomic(dst, b); err != nil {
			ociError(w, http.StatusInternalServerError, "UNKNOWN", "%v", err)
			return
		}
		s.total += int64(len(b))
		s.used[owner] += int64(len(b))
		s.saveUsageLocked()
	}
	if tag != "" {
		if err := writeAtomic(s.tagPath(repo, tag), []byte(d)); err != nil {
			ociError(w, http.StatusInternalServerError, "UNKNOWN", "%v", err)
			return
		}
	}
	w.Header().Set("Location", "/v2/"+repo+"/manifests/"+string(d))
	w.Header().Set("Docker-Content-Digest", string(d))
	w.WriteHeader(http.StatusCreated)
}

type ref0 struct {
	Digest string `json:"digest"`
	Size   int64  `json:"size"`
}

func writeAtomic(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, b, 0o600)
}

// PublicKeyString formats a pusher key the way Options.Pushers names it.
func PublicKeyString(pub ed25519.PublicKey) string { return keys.FormatSigningKey(pub) }
