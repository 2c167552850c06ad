package console

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cloisterhq/cloister/api/protocol"
	"github.com/cloisterhq/cloister/ledger/acl"
	lclient "github.com/cloisterhq/cloister/ledger/client"
)

// index follows the ledger through its public API and keeps, for every
// entry, what the explorer lists and searches by: kind, submitter,
// session, and the keys and digests its body names. It holds no entry
// bodies (those are read again from the ledger when shown) and stops
// growing at max entries, which the explorer then says.
type index struct {
	lc  *lclient.Client
	log *slog.Logger
	max int

	mu      sync.RWMutex
	entries []entryMeta
	tokens  map[string][]uint64
	full    bool
	err     string // the last error reading the ledger, "" once it reads again
	// artifactAt names the artifact of each grant and delegation entry,
	// so that a revocation (which names only the entry it ends) is
	// found under its artifact too.
	artifactAt map[uint64]string
	changed    chan struct{}
}

// entryMeta is what the index keeps of one entry.
type entryMeta struct {
	Kind      string `json:"kind"`
	Event     string `json:"event,omitempty"`
	Submitter string `json:"submitter"`
	Time      string `json:"time"`
	Session   string `json:"session,omitempty"`
	Height    int64  `json:"height"`
}

// Token prefixes: what a token names.
const (
	tokSession = "s:"
	tokKey     = "k:"
	tokDigest  = "d:"
	// tokArtifact: the entries about a sealed artifact (its digest,
	// "sha256:…"): registration, delegations, grants, their revocations
	// and the key releases.
	tokArtifact = "a:"
)

func newIndex(lc *lclient.Client, max int, log *slog.Logger) *index {
	return &index{lc: lc, log: log, max: max, tokens: map[string][]uint64{}, artifactAt: map[uint64]string{}, changed: make(chan struct{})}
}

// run reads entries as the ledger commits them until ctx ends.
func (ix *index) run(ctx context.Context) {
	const page = 500
	idle := 200 * time.Millisecond
	for ctx.Err() == nil {
		ix.mu.RLock()
		next, full := uint64(len(ix.entries)), ix.full
		ix.mu.RUnlock()
		if full {
			return
		}
		p, err := ix.lc.Entries(ctx, next, page)
		if err != nil {
			var apiErr *lclient.APIError
			if !(errors.As(err, &apiErr) && apiErr.Code == "not_found") && ctx.Err() == nil {
				ix.setErr(err.Error())
			}
			sleep(ctx, 2*time.Second)
			continue
		}
		ix.add(next, p.Entries)
		if len(p.Entries) == 0 {
			sleep(ctx, idle)
		}
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

func (ix *index) setErr(s string) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	if s != ix.err {
		ix.log.Warn("console: reading the ledger", "err", s)
	}
	ix.err = s
}

func (ix *index) add(from uint64, es []*lclient.Entry) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.err = ""
	for k, e := range es {
		if e.Index != from+uint64(k) || uint64(len(ix.entries)) != e.Index {
			return // out of step: read again from where the index is
		}
		if len(ix.entries) >= ix.max {
			ix.full = true
			return
		}
		se := e.Signed
		m := entryMeta{Kind: string(se.Entry.Kind), Submitter: se.Entry.Submitter, Time: se.Entry.Time, Height: e.Height}
		var body map[string]any
		json.Unmarshal(se.Entry.Body, &body)
		m.Session, _ = body["session"].(string)
		m.Event, _ = body["event"].(string)
		toks := map[string]bool{tokKey + m.Submitter: true}
		if m.Session != "" {
			toks[tokSession+m.Session] = true
		}
		collectTokens(body, toks, 0)
		if a := ix.artifactOf(e.Index, m.Kind, body); a != "" {
			toks[tokArtifact+a] = true
		}
		for t := range toks {
			ix.tokens[t] = append(ix.tokens[t], e.Index)
		}
		ix.entries = append(ix.entries, m)
	}
	if len(es) > 0 {
		close(ix.changed)
		ix.changed = make(chan struct{})
	}
}

// artifactOf returns the artifact digest an entry is about ("" if none),
// remembering it for grants and delegations.
func (ix *index) artifactOf(i uint64, kind string, body map[string]any) string {
	var a string
	switch kind {
	case acl.KindArtifactRegistered:
		a, _ = body["digest"].(string)
		if validArtifact(a) {
			ix.artifactAt[i] = a
		}
	case acl.KindGranted, acl.KindDelegated:
		a, _ = body["artifact"].(string)
		if validArtifact(a) {
			ix.artifactAt[i] = a
		}
	case acl.KindKeyReleased:
		a, _ = body["artifact"].(string)
	case acl.KindRevoked:
		for _, f := range []string{"grant", "delegation"} {
			if n, ok := body[f].(float64); ok && n >= 0 && n < 1<<53 {
				a = ix.artifactAt[uint64(n)]
			}
		}
	}
	if !validArtifact(a) {
		return ""
	}
	return a
}

// validArtifact reports whether a is an artifact digest, sha256: and 64
// lower-case hex digits.
func validArtifact(a string) bool {
	h, ok := strings.CutPrefix(a, "sha256:")
	return ok && isHex(h, 64) && strings.ToLower(h) == h
}

// collectTokens adds the keys and digests a body names, at any depth
// (bounded): strings "ed25519:…" and 64 hex digits, as values or as map
// keys (a result commitment names readers' envelopes by output).
func collectTokens(v any, toks map[string]bool, depth int) {
	if depth > 8 || len(toks) > 256 {
		return
	}
	switch x := v.(type) {
	case string:
		if t := tokenOf(x); t != "" {
			toks[t] = true
		}
	case map[string]any:
		for _, e := range x {
			collectTokens(e, toks, depth+1)
		}
	case []any:
		for _, e := range x {
			collectTokens(e, toks, depth+1)
		}
	}
}

// tokenOf says what a string names for search: a key, a digest, or
// nothing.
func tokenOf(s string) string {
	switch {
	case strings.HasPrefix(s, protocol.Ed25519KeyPrefix) && len(s) < 100:
		return tokKey + s
	case isHex(s, 64):
		return tokDigest + strings.ToLower(s)
	case validArtifact(s):
		return tokDigest + s[len("sha256:"):]
	}
	return ""
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// status reports how far the index reached.
func (ix *index) status() (size int, full bool, err string) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return len(ix.entries), ix.full, ix.err
}

// meta returns the metadata of entry i.
func (ix *index) meta(i uint64) (entryMeta, bool) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if i >= uint64(len(ix.entries)) {
		return entryMeta{}, false
	}
	return ix.entries[i], true
}

// artifactAtRegistration returns the digest an artifact.registered
// entry registered ("" if i is no such entry).
func (ix *index) artifactAtRegistration(i uint64) string {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if i >= uint64(len(ix.entries)) || ix.entries[i].Kind != acl.KindArtifactRegistered {
		return ""
	}
	return ix.artifactAt[i]
}

// lookup returns the indices of the entries with token t, ascending.
func (ix *index) lookup(t string) []uint64 {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return slices.Clone(ix.tokens[t])
}

// kinds counts entries by kind.
func (ix *index) kinds() map[string]int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	out := map[string]int{}
	for _, m := range ix.entries {
		out[m.Kind]++
	}
	return out
}

// list returns up to limit entries below before (newest first) matching
// kind ("" any), and the index to continue from (0: no more).
func (ix *index) list(kind string, before uint64, limit int) ([]uint64, uint64) {
	return ix.listMatch(func(k string) bool { return kind == "" || k == kind }, before, limit)
}

// listMatch is list for the kinds match accepts.
func (ix *index) listMatch(match func(kind string) bool, before uint64, limit int) ([]uint64, uint64) {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	if before > uint64(len(ix.entries)) {
		before = uint64(len(ix.entries))
	}
	var out []uint64
	for i := before; i > 0; i-- {
		if !match(ix.entries[i-1].Kind) {
			continue
		}
		if len(out) == limit {
			return out, i
		}
		out = append(out, i-1)
	}
	return out, 0
}

// waitFor waits until the index holds entry i, or ctx ends.
func (ix *index) waitFor(ctx context.Context, i uint64) bool {
	for {
		ix.mu.RLock()
		ok, ch := uint64(len(ix.entries)) > i, ix.changed
		ix.mu.RUnlock()
		if ok {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}
