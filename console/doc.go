// Package console is the node's web console: server-rendered pages under
// /ui/ on which people see what a node ran, under which policy, with which
// evidence, and check it for themselves; and the same data as JSON under
// /ui/api/ for scripts.
//
// Pages: the overview (identity, isolate class and what it protects,
// ledger, sessions, worker pool, refusals by rule), the ledger explorer
// (entries by kind; search by index, session, principal key or artifact
// digest; each entry decoded with its inclusion proof and the checkpoint
// with its cosigners), sessions (state machine, decoded policy, each
// step's ledger index; never any data) and each session's receipt
// (package receipt), which the viewer's browser verifies with
// static/verify.js against a trust root the viewer brings.
//
// The console is read-only: it changes nothing on the node, shows no
// secret (it reads only public material through node.View, node.Session,
// node.Receipt and the ledger's public API), and is served through
// internal/httpguard with a strict Content-Security-Policy (no inline
// script, nothing loaded from elsewhere), a Host check against DNS
// rebinding and a CSRF guard on every request that is not a plain read.
// Capabilities that come later add their pages as Sections.
//
// It is not an API for principals (they use the node's API with their
// keys) and it is not trusted: whatever it says about the ledger, a viewer
// checks in the browser or with `cloister receipt verify`.
package console
