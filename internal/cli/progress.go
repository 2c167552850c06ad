package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// A wait longer than a second says on standard error what it waits for,
// for how long so far and out of how much, and what is still missing, on
// one line rewritten in place. It says nothing under --quiet, nothing when
// standard error is not a terminal (logs and scripts get only the result),
// and nothing for a wait that ends within the first second.

// progressDelay is how long a wait lasts before it is reported;
// progressTick how often the line is rewritten. Tests shorten them.
var (
	progressDelay = time.Second
	progressTick  = time.Second
)

// quietFlag is the root's persistent flag that silences progress.
const quietFlag = "quiet"

// progress reports one wait while it lasts.
type progress struct {
	w     io.Writer
	what  string
	limit time.Duration
	start time.Time

	mu      sync.Mutex
	detail  string
	printed bool
	stop    chan struct{}
	stopped chan struct{}
}

// startProgress starts reporting a wait for what (limit 0: no limit), if
// cmd's standard error is a terminal and --quiet is not set. Call done
// when the wait is over; it clears the line.
func startProgress(cmd *cobra.Command, what string, limit time.Duration) *progress {
	w := cmd.ErrOrStderr()
	if quiet(cmd) || !isTerminal(w) {
		w = nil
	}
	return newProgress(w, what, limit)
}

// newProgress reports on w, or on nothing if w is nil.
func newProgress(w io.Writer, what string, limit time.Duration) *progress {
	p := &progress{w: w, what: what, limit: limit, start: time.Now(), stop: make(chan struct{}), stopped: make(chan struct{})}
	if w == nil {
		close(p.stopped)
		return p
	}
	go p.loop()
	return p
}

// quiet reports whether --quiet was given anywhere on the command line.
func quiet(cmd *cobra.Command) bool {
	f := cmd.Flags().Lookup(quietFlag)
	if f == nil {
		f = cmd.InheritedFlags().Lookup(quietFlag)
	}
	return f != nil && f.Value.String() == "true"
}

// isTerminal reports whether f (a reader or writer) is a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// set says what is missing now ("" for nothing in particular).
func (p *progress) set(detail string) {
	if p == nil {
		return
	}
	p.mu.Lock()
	p.detail = detail
	p.mu.Unlock()
}

func (p *progress) loop() {
	defer close(p.stopped)
	select {
	case <-p.stop:
		return
	case <-time.After(progressDelay):
	}
	t := time.NewTicker(progressTick)
	defer t.Stop()
	for {
		p.mu.Lock()
		fmt.Fprintf(p.w, "\r\033[K%s", progressLine(p.what, time.Since(p.start), p.limit, p.detail))
		p.printed = true
		p.mu.Unlock()
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

// done ends the report and clears its line, so that what follows starts
// on a clean line.
func (p *progress) done() {
	if p == nil {
		return
	}
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.stopped
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.printed {
		fmt.Fprint(p.w, "\r\033[K")
		p.printed = false
	}
}

// progressLine is the text of one report: "cloister: waiting for WHAT:
// 4s of 30s; DETAIL".
func progressLine(what string, elapsed, limit time.Duration, detail string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cloister: waiting for %s: %s", what, roundSeconds(elapsed))
	if limit > 0 {
		fmt.Fprintf(&b, " of %s", roundSeconds(limit))
	}
	if detail != "" {
		fmt.Fprintf(&b, "; %s", detail)
	}
	return b.String()
}

// roundSeconds prints d to the second: "4s", "1m30s", "2m", "1h".
func roundSeconds(d time.Duration) string {
	s := d.Round(time.Second).String()
	if t, ok := strings.CutSuffix(s, "m0s"); ok {
		s = t + "m"
	}
	if t, ok := strings.CutSuffix(s, "h0m"); ok {
		s = t + "h"
	}
	return s
}
