package node

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// The ring keeps the latest warnings and errors, with the session and
// error named by the logger's attributes or the record's, and passes
// everything to the handler beneath at its own level.
func TestErrorRing(t *testing.T) {
	var out bytes.Buffer
	var ring errorRing
	log := slog.New(&ringHandler{next: slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelError}), ring: &ring})
	log.Info("not kept")
	log.With("session", "s1").Warn("kept", "err", errors.New("boom"))
	for range 20 {
		log.Error("many", "err", strings.Repeat("x", 1000))
	}
	got, total := ring.latest()
	if total != 21 || len(got) != 16 {
		t.Fatalf("total %d, kept %d", total, len(got))
	}
	if got[0].Message != "many" || len(got[15].Err) > 520 {
		t.Fatalf("kept %+v", got[0])
	}
	var ring2 errorRing
	log = slog.New(&ringHandler{next: slog.NewTextHandler(&out, nil), ring: &ring2})
	log.With("session", "s1").Warn("kept", "err", errors.New("boom"))
	if got, _ := ring2.latest(); len(got) != 1 || got[0].Session != "s1" || got[0].Err != "boom" || got[0].Level != "WARN" {
		t.Fatalf("kept %+v", got)
	}
	if n := strings.Count(out.String(), "\n"); n != 21 {
		t.Fatalf("%d lines reached the handler beneath, want 21 (20 errors, 1 warning; no info nor the first warning)\n%s", n, out.String())
	}
}

func TestLoopbackPeer(t *testing.T) {
	for addr, want := range map[string]bool{"127.0.0.1:5": true, "[::1]:5": true, "10.0.0.1:5": false, "[2001:db8::1]:5": false, "junk": false} {
		if loopbackPeer(addr) != want {
			t.Errorf("loopbackPeer(%q) = %v", addr, !want)
		}
	}
}
