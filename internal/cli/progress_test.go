package cli

import (
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestProgress: a wait is reported after the delay, rewritten in place
// with what is missing, and its line cleared at the end; a short wait, or
// a wait with nowhere to report, prints nothing. (Not parallel: it sets
// the package's delays.)
func TestProgress(t *testing.T) {
	progressDelay, progressTick = 20*time.Millisecond, 10*time.Millisecond
	defer func() { progressDelay, progressTick = time.Second, time.Second }()

	var w syncBuf
	p := newProgress(&w, "the thing", time.Minute)
	p.set("missing input a from bob")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(w.String(), "bob") && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	p.done()
	out := w.String()
	if !strings.HasPrefix(out, "\r\033[Kcloister: waiting for the thing: 0s of 1m; missing input a from bob") || !strings.HasSuffix(out, "\r\033[K") {
		t.Errorf("reported %q", out)
	}
	p.done() // twice is harmless

	var quick syncBuf
	p = newProgress(&quick, "the thing", 0)
	p.done()
	if quick.String() != "" {
		t.Errorf("a wait shorter than the delay printed %q", quick.String())
	}
	newProgress(nil, "nothing", 0).done()
	var nilP *progress
	nilP.set("x")
	nilP.done()

	// Not a terminal, or --quiet: silent.
	if isTerminal(&w) {
		t.Error("a buffer is a terminal")
	}
	root := newRoot()
	root.ParseFlags([]string{"--quiet"})
	if !quiet(root) {
		t.Error("--quiet not seen")
	}
}
