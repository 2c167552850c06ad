package isolate

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// entryFiles lists the cache's entries of module mod.
func entryFiles(t *testing.T, r *Runtime, mod []byte) []string {
	t.Helper()
	sum := sha256.Sum256(mod)
	m, err := filepath.Glob(filepath.Join(r.jail.cache.entries(), hex.EncodeToString(sum[:])+".*"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// waitEntry waits for the worker of the last run to be reaped and its
// entry kept (that happens after Run returns).
func waitEntry(t *testing.T, r *Runtime, mod []byte) string {
	t.Helper()
	for i := 0; i < 200; i++ {
		if m := entryFiles(t, r, mod); len(m) == 1 {
			return m[0]
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no cache entry for the module after its run")
	return ""
}

// TestCacheEntryAuthenticated: a worker's compiled code is kept by the
// parent, authenticated, for its own module only; an entry changed on
// disk — a flipped byte, or another module's entry put in its place — is
// refused (dropped and counted) and the worker compiles afresh, so the
// run is right; the entry comes back whole.
func TestCacheEntryAuthenticated(t *testing.T) {
	r := newRuntime(t, Options{DataDir: t.TempDir()})
	a, b := wasmExit(5), wasmExit(6)
	for _, m := range [][]byte{a, b} {
		res := mustRun(t, r, &Config{Module: m, Timeout: time.Minute})
		res.Close()
	}
	pa, pb := waitEntry(t, r, a), waitEntry(t, r, b)
	orig, err := os.ReadFile(pa)
	if err != nil {
		t.Fatal(err)
	}
	check := func(what string, tamper func()) {
		t.Helper()
		before := r.jail.cache.Refused()
		tamper()
		res := mustRun(t, r, &Config{Module: a, Timeout: time.Minute})
		wantOutcome(t, res, OutcomeExited, 5)
		if got := r.jail.cache.Refused(); got != before+1 {
			t.Errorf("%s: %d entries refused, want %d", what, got, before+1)
		}
		p := waitEntry(t, r, a)
		if _, _, err := r.jail.cache.verify(p, sha256.Sum256(a)); err != nil {
			t.Errorf("%s: the entry kept again does not verify: %v", what, err)
		}
	}
	check("a flipped byte", func() {
		c := append([]byte(nil), orig...)
		c[len(c)-10] ^= 1
		if err := os.WriteFile(pa, c, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	check("another module's entry", func() {
		other, err := os.ReadFile(pb)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pa, other, 0o600); err != nil {
			t.Fatal(err)
		}
	})
	// An untouched entry is used as it is: nothing refused, nothing
	// rewritten.
	st0, _ := os.Stat(pa)
	before := r.jail.cache.Refused()
	res := mustRun(t, r, &Config{Module: a, Timeout: time.Minute})
	wantOutcome(t, res, OutcomeExited, 5)
	time.Sleep(200 * time.Millisecond)
	st1, _ := os.Stat(pa)
	if r.jail.cache.Refused() != before || !st1.ModTime().Equal(st0.ModTime()) {
		t.Errorf("an intact entry was refused or rewritten")
	}
	// Workers never see the cache's entries, only their own directory.
	if ents, _ := os.ReadDir(r.jail.cache.stagingRoot()); len(ents) > 1 {
		t.Logf("%d staging directories left (workers still being reaped)", len(ents))
	}
}

// TestCacheEntryUsed: the entry kept from one worker's compilation is what
// the next worker of the same module loads: the file it was given is still
// the one in its cache when it is gone (wazero replaces a file it writes).
// The times are logged; the benchmarks, not this test, judge speed.
func TestCacheEntryUsed(t *testing.T) {
	mod := hostileGuest(t)
	r := newRuntime(t, Options{DataDir: t.TempDir()})
	run := func() time.Duration {
		start := time.Now()
		res := mustRun(t, r, &Config{Module: mod, Name: "inputs", Args: []string{"-skip"}, Timeout: time.Minute})
		wantOutcome(t, res, OutcomeExited, 0)
		return time.Since(start)
	}
	cold := run()
	waitEntry(t, r, mod)
	if n := r.jail.cache.Loaded(); n != 0 {
		t.Fatalf("%d entries loaded before any was kept", n)
	}
	warm := run()
	t.Logf("first run %v (compiles), second %v (loads the kept entry)", cold, warm)
	for i := 0; r.jail.cache.Loaded() == 0 && i < 200; i++ {
		time.Sleep(50 * time.Millisecond) // the worker's directory is settled after it is reaped
	}
	if n := r.jail.cache.Loaded(); n != 1 {
		t.Errorf("the second worker loaded %d kept entries, want 1: it compiled the module afresh", n)
	}
}

// TestCacheTamperedEntryNeverStaged: an entry changed on disk is refused
// by the parent before anything of it reaches a worker's directory, so no
// engine ever deserialises it — wasmtime, like wazero, trusts the native
// code it loads completely. Each engine's entry layout is tried: a flipped
// byte, a truncated entry, another module's entry under this module's
// name.
func TestCacheTamperedEntryNeverStaged(t *testing.T) {
	c, err := openEntryCache(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	a, b := sha256.Sum256([]byte("module a")), sha256.Sum256([]byte("module b"))
	for _, vdir := range []string{"wazero-v1.12.0", "wasmtime-39.0.1-c1", "wasmtime-39.0.1-c1-det"} {
		// An entry kept the way the parent keeps a worker's: harvested.
		keep := func(sum [32]byte, code []byte) string {
			w, err := c.newStaging()
			if err != nil {
				t.Fatal(err)
			}
			os.MkdirAll(filepath.Join(w, vdir), 0o700)
			if err := os.WriteFile(filepath.Join(w, vdir, hex.EncodeToString(sum[:])), code, 0o600); err != nil {
				t.Fatal(err)
			}
			c.harvest(w, sum, true)
			p := c.entryPath(sum, vdir)
			if _, _, err := c.verify(p, sum); err != nil {
				t.Fatalf("%s: the kept entry does not verify: %v", vdir, err)
			}
			return p
		}
		pa := keep(a, bytes.Repeat([]byte("native code of a "), 1000))
		pb := keep(b, bytes.Repeat([]byte("native code of b "), 1000))
		orig, _ := os.ReadFile(pa)
		other, _ := os.ReadFile(pb)
		staged := func() []string {
			w, err := c.newStaging()
			if err != nil {
				t.Fatal(err)
			}
			defer os.RemoveAll(w)
			c.stage(w, a)
			var got []string
			filepath.WalkDir(w, func(p string, d os.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					got = append(got, p)
				}
				return nil
			})
			return got
		}
		if got := staged(); len(got) != 1 {
			t.Fatalf("%s: an intact entry staged as %v, want one file", vdir, got)
		}
		flipped := bytes.Clone(orig)
		flipped[len(flipped)-100] ^= 0x40
		for _, tc := range []struct {
			name string
			data []byte
		}{
			{"a flipped byte of code", flipped},
			{"truncated", orig[:len(orig)-17]},
			{"another module's entry", other},
		} {
			before := c.Refused()
			if err := os.WriteFile(pa, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if got := staged(); len(got) != 0 {
				t.Errorf("%s, %s: staged %v", vdir, tc.name, got)
			}
			if c.Refused() != before+1 {
				t.Errorf("%s, %s: not counted as refused", vdir, tc.name)
			}
			if _, err := os.Stat(pa); !os.IsNotExist(err) {
				t.Errorf("%s, %s: the refused entry is still there", vdir, tc.name)
			}
		}
	}
}
