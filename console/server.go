package console

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path"
	"strings"
	"sync"
	"time"

	lclient "github.com/cloisterhq/cloister/ledger/client"
	"github.com/cloisterhq/cloister/node"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Node is what the console reads of a node; *node.Node implements it.
type Node interface {
	View() node.View
	Sessions(maxClosed int) []node.SessionSummary
	Session(id string) (*node.SessionView, error)
	Receipt(id string) (*node.ReceiptMaterial, error)
}

// Options configures a console.
type Options struct {
	// Node is the node shown. Required.
	Node Node
	// Ledger reads the ledger the node records on; nil when it records
	// on none. For an embedded ledger, LedgerClient(handler) makes one.
	Ledger *lclient.Client
	// Hosts are the host names (without port) a request may name in its
	// Host header besides loopback addresses and the listener's own
	// address: a page reached under any other name is refused, so that a
	// web site cannot read the console through DNS rebinding.
	Hosts []string
	// MaxIndexed bounds the ledger entries the explorer indexes
	// (0: DefaultMaxIndexed).
	MaxIndexed int
	// Sections adds pages (capabilities that come later: offers,
	// dispatch, models, challenges, key releases).
	Sections []Section
	// Logger receives the console's logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultMaxIndexed is the number of ledger entries the explorer indexes
// by default (a few hundred bytes each).
const DefaultMaxIndexed = 500_000

// Section is a page a capability adds to the console: served at
// /ui/<Path> (HTML, with the template named Template among Templates) and
// /ui/api/<Path> (JSON of what Load returns), and listed in the
// navigation under Title.
type Section struct {
	Path      string
	Title     string
	Template  string
	Templates fs.FS // parsed with the console's own templates
	Load      func(r *http.Request) (any, error)
}

// Server is a console. Serve it with Handler (under internal/httpguard).
type Server struct {
	opts   Options
	log    *slog.Logger
	tmpl   *template.Template
	static map[string]staticFile
	index  *index
	csrf   []byte // key of the CSRF tokens
	// actions are the state-changing endpoints (POST), each behind the
	// CSRF guard. None is built in: the console only reads.
	actions map[string]http.Handler

	mu    sync.Mutex
	hosts map[string]bool
}

type staticFile struct {
	body []byte
	typ  string
	sum  string // base64 SHA-256, for Subresource Integrity
}

// New makes a console. Call Run to start following the ledger.
func New(opts Options) (*Server, error) {
	if opts.Node == nil {
		return nil, errors.New("console: no node")
	}
	s := &Server{opts: opts, log: opts.Logger, static: map[string]staticFile{}, actions: map[string]http.Handler{}, hosts: map[string]bool{}}
	if s.log == nil {
		s.log = slog.Default()
	}
	for _, h := range opts.Hosts {
		s.hosts[strings.ToLower(h)] = true
	}
	s.csrf = make([]byte, 32)
	if _, err := rand.Read(s.csrf); err != nil {
		return nil, err
	}
	err := fs.WalkDir(staticFS, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := staticFS.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b)
		typ := "application/octet-stream"
		switch path.Ext(p) {
		case ".js":
			typ = "text/javascript; charset=utf-8"
		case ".css":
			typ = "text/css; charset=utf-8"
		case ".svg":
			typ = "image/svg+xml"
		}
		s.static[strings.TrimPrefix(p, "static/")] = staticFile{body: b, typ: typ, sum: base64.StdEncoding.EncodeToString(sum[:])}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("console: static files: %w", err)
	}
	s.tmpl = template.New("").Funcs(s.funcs())
	if s.tmpl, err = s.tmpl.ParseFS(templateFS, "templates/*.html"); err != nil {
		return nil, fmt.Errorf("console: templates: %w", err)
	}
	for _, sec := range opts.Sections {
		if sec.Templates != nil {
			if s.tmpl, err = s.tmpl.ParseFS(sec.Templates, "*.html"); err != nil {
				return nil, fmt.Errorf("console: section %s: %w", sec.Path, err)
			}
		}
	}
	if opts.Ledger != nil {
		max := opts.MaxIndexed
		if max <= 0 {
			max = DefaultMaxIndexed
		}
		s.index = newIndex(opts.Ledger, max, s.log)
	}
	return s, nil
}

// Run follows the ledger for the explorer's index until ctx ends.
func (s *Server) Run(ctx context.Context) {
	if s.index != nil {
		s.index.run(ctx)
	}
}

// AllowHost adds a host name (or address) requests may name, such as the
// address the console was bound to.
func (s *Server) AllowHost(h string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	s.hosts[strings.ToLower(strings.Trim(h, "[]"))] = true
}

// Action registers a state-changing endpoint at /ui/api/<p> (POST only),
// behind the CSRF guard. The handler must itself demand the authority the
// change needs (a principal's signature, an operator token): the guard
// only stops other sites from riding a viewer's browser.
func (s *Server) Action(p string, h http.Handler) { s.actions["/ui/api/"+p] = h }

// VerifierScriptSHA256 is the hex SHA-256 of the browser verifier
// (static/verify.js) this console serves; docs/console.md publishes it
// so that a viewer can check the script a node serves.
func VerifierScriptSHA256() string {
	b, _ := staticFS.ReadFile("static/verify.js")
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// csp is the Content-Security-Policy of every response: nothing from
// elsewhere, no inline script or style, no framing, forms only to itself.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Handler serves the console under /ui/.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	page := func(pattern, tmpl string, load func(*http.Request) (any, error)) {
		mux.HandleFunc("GET /ui"+pattern, func(w http.ResponseWriter, r *http.Request) { s.render(w, r, tmpl, load) })
		api := "GET /ui/api" + pattern
		if pattern == "/{$}" {
			api = "GET /ui/api/overview"
		}
		mux.HandleFunc(api, func(w http.ResponseWriter, r *http.Request) { s.serveJSON(w, r, load) })
	}
	page("/{$}", "overview", s.loadOverview)
	page("/ledger", "ledger", s.loadLedger)
	page("/ledger/entry/{index}", "entry", s.loadEntry)
	page("/sessions", "sessions", s.loadSessions)
	page("/sessions/{id}", "session", s.loadSession)
	page("/sessions/{id}/receipt", "receipt", s.loadReceiptPage)
	page("/market", "market", s.loadMarket)
	page("/keys", "keys", s.loadKeys)
	page("/keys/{digest}", "artifact", s.loadArtifact)
	page("/models", "models", s.loadModels)
	page("/piee", "piee", s.loadPiee)
	for _, sec := range s.opts.Sections {
		page("/"+sec.Path, sec.Template, sec.Load)
	}
	mux.HandleFunc("GET /ui/api/sessions/{id}/receipt.json", s.serveReceipt)
	mux.HandleFunc("GET /ui/api/ledger/consistency", s.serveConsistency)
	mux.HandleFunc("GET /ui/static/{file}", s.serveStatic)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) })
	mux.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ui/", http.StatusFound) })
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", csp)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if !s.hostAllowed(r.Host) {
			http.Error(w, "console: unknown host name "+fmt.Sprintf("%.100q", r.Host)+" (the console answers only to the names it is bound to; cloister node --console-host adds one)", http.StatusMisdirectedRequest)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
			mux.ServeHTTP(w, r)
		case http.MethodPost:
			s.serveAction(w, r)
		default:
			w.Header().Set("Allow", "GET, HEAD, POST")
			http.Error(w, "console: method not allowed", http.StatusMethodNotAllowed)
		}
	})
}

func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	if host == "localhost" {
		return true
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hosts[host]
}

// csrfToken is the token a page's forms carry: an HMAC of the viewer's
// CSRF cookie, which the console sets (SameSite=Strict) when a page is
// rendered.
func (s *Server) csrfToken(w http.ResponseWriter, r *http.Request) string {
	c, err := r.Cookie(csrfCookie)
	if err != nil || len(c.Value) != 43 {
		b := make([]byte, 32)
		rand.Read(b)
		c = &http.Cookie{Name: csrfCookie, Value: base64.RawURLEncoding.EncodeToString(b), Path: "/ui/", HttpOnly: true, SameSite: http.SameSiteStrictMode}
		if w != nil {
			http.SetCookie(w, c)
		}
	}
	m := hmac.New(sha256.New, s.csrf)
	m.Write([]byte(c.Value))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

const csrfCookie = "cloister_console_csrf"

// serveAction runs a registered action after the CSRF guard: the request
// must come from a page of this console (Origin or Sec-Fetch-Site) and
// carry the token of the viewer's cookie (form field or X-CSRF-Token).
func (s *Server) serveAction(w http.ResponseWriter, r *http.Request) {
	h, ok := s.actions[r.URL.Path]
	if !ok {
		http.Error(w, "console: no such action; the console changes nothing on the node except through actions a capability registers", http.StatusNotFound)
		return
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		http.Error(w, "console: refused by rule csrf: a request from another site ("+site+")", http.StatusForbidden)
		return
	}
	if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host && o != "https://"+r.Host {
		http.Error(w, "console: refused by rule csrf: a request from origin "+fmt.Sprintf("%.100q", o), http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	if _, err := r.Cookie(csrfCookie); err != nil || tok == "" || !hmac.Equal([]byte(tok), []byte(s.csrfToken(nil, r))) {
		http.Error(w, "console: refused by rule csrf: the request carries no valid token of this console (reload the page)", http.StatusForbidden)
		return
	}
	h.ServeHTTP(w, r)
}

// pageData wraps what a page shows with what every page needs.
type pageData struct {
	Title    string
	Path     string
	Nav      []navItem
	CSRF     string
	Script   string // the page's script, if any (static file name)
	Scripts  map[string]string
	Verifier string // hex SHA-256 of verify.js
	Data     any
}

type navItem struct {
	Path, Title string
	Current     bool
}

// httpError is an error with the status a page answers it with.
type httpError struct {
	status int
	err    error
}

func (e *httpError) Error() string { return e.err.Error() }

func notFound(format string, args ...any) error {
	return &httpError{http.StatusNotFound, fmt.Errorf(format, args...)}
}

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, fmt.Errorf(format, args...)}
}

func statusOf(err error) int {
	var he *httpError
	if errors.As(err, &he) {
		return he.status
	}
	return http.StatusInternalServerError
}

// titled is implemented by page data that names its page.
type titled interface{ title() string }

func (s *Server) render(w http.ResponseWriter, r *http.Request, name string, load func(*http.Request) (any, error)) {
	data, err := load(r)
	pd := pageData{Path: r.URL.Path, CSRF: s.csrfToken(w, r), Verifier: VerifierScriptSHA256(), Scripts: map[string]string{}}
	for f, sf := range s.static {
		pd.Scripts[f] = "sha256-" + sf.sum
	}
	pd.Nav = []navItem{{"/ui/", "Overview", false}, {"/ui/ledger", "Ledger", false}, {"/ui/sessions", "Sessions", false},
		{"/ui/market", "Market", false}, {"/ui/keys", "Key releases", false}, {"/ui/models", "Models", false}, {"/ui/piee", "PIEE", false}}
	for _, sec := range s.opts.Sections {
		pd.Nav = append(pd.Nav, navItem{"/ui/" + sec.Path, sec.Title, false})
	}
	for i := range pd.Nav {
		p := pd.Nav[i].Path
		pd.Nav[i].Current = r.URL.Path == p || p != "/ui/" && strings.HasPrefix(r.URL.Path, p+"/")
	}
	status := http.StatusOK
	if err != nil {
		status = statusOf(err)
		name = "error"
		data = errorPage{Status: status, Message: err.Error()}
	}
	if t, ok := data.(titled); ok {
		pd.Title = t.title()
	}
	for _, sec := range s.opts.Sections {
		if pd.Title == "" && sec.Template == name {
			pd.Title = sec.Title
		}
	}
	if sc, ok := data.(interface{ script() string }); ok {
		pd.Script = sc.script()
	}
	pd.Data = data
	var buf bytes.Buffer
	if err := s.tmpl.ExecuteTemplate(&buf, name, &pd); err != nil {
		s.log.Error("console: rendering", "page", name, "err", err)
		http.Error(w, "console: rendering the page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

type errorPage struct {
	Status  int
	Message string
}

func (e errorPage) title() string { return http.StatusText(e.Status) }

func (s *Server) serveJSON(w http.ResponseWriter, r *http.Request, load func(*http.Request) (any, error)) {
	data, err := load(r)
	if err != nil {
		writeJSON(w, statusOf(err), map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, data)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"encoding the response failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func (s *Server) serveStatic(w http.ResponseWriter, r *http.Request) {
	f, ok := s.static[r.PathValue("file")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", f.typ)
	w.Header().Set("Cache-Control", "no-cache")
	w.Header().Set("ETag", `"`+f.sum+`"`)
	if r.Header.Get("If-None-Match") == `"`+f.sum+`"` {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Write(f.body)
}

// LedgerClient returns a ledger client that reads the ledger served by h
// (an embedded ledger's Handler) in process, without a listener.
func LedgerClient(h http.Handler) (*lclient.Client, error) {
	return lclient.New("http://ledger.internal", lclient.WithHTTPClient(&http.Client{Transport: handlerTransport{h}, Timeout: 30 * time.Second}))
}

// handlerTransport serves requests with a handler in process.
type handlerTransport struct{ h http.Handler }

func (t handlerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	t.h.ServeHTTP(rec, r)
	return &http.Response{
		Status: fmt.Sprintf("%d %s", rec.status, http.StatusText(rec.status)), StatusCode: rec.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: rec.header, Body: io.NopCloser(bytes.NewReader(rec.body.Bytes())), ContentLength: int64(rec.body.Len()), Request: r,
	}, nil
}

type recorder struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) WriteHeader(status int) {
	if !r.wrote {
		r.status, r.wrote = status, true
	}
}
func (r *recorder) Write(p []byte) (int, error) {
	r.wrote = true
	return r.body.Write(p)
}
