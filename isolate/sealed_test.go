package isolate

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/sealed"
)

func sealForTest(t testing.TB, pt []byte) ([]byte, *sealed.Key) {
	t.Helper()
	var ct bytes.Buffer
	k, _, err := sealed.Seal(&ct, bytes.NewReader(pt))
	if err != nil {
		t.Fatal(err)
	}
	return ct.Bytes(), k
}

// TestSealedModuleAndInputs: a sealed program is opened inside the worker
// with the key of the secret frame and runs; sealed inputs are read as
// plaintext — a file in place (pread anywhere), a stream in order — and a
// chunk that does not authenticate fails the read rather than reaching
// the guest; a wrong key or another program is refused before anything
// runs. In a worker and in process.
func TestSealedModuleAndInputs(t *testing.T) {
	mod := hostileGuest(t)
	sealedMod, modKey := sealForTest(t, mod)
	file := make([]byte, 200_000)
	stream := make([]byte, 150_000)
	rand.Read(file)
	rand.Read(stream)
	sealedFile, fileKey := sealForTest(t, file)
	sealedStream, streamKey := sealForTest(t, stream)
	path := filepath.Join(t.TempDir(), "file.sealed")
	if err := os.WriteFile(path, sealedFile, 0o600); err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(sealedFile)
	tampered[len(tampered)/2] ^= 1
	line := func(name string, b []byte, size int64, pread string) string {
		return fmt.Sprintf("%s size=%d sha256=%x read=%d pread=%s", name, size, sha256.Sum256(b), len(b), pread)
	}
	cfg := func() *Config {
		return &Config{SealedModule: &Input{Data: sealedMod}, ModuleKey: modKey, ModuleSHA256: sha256.Sum256(mod),
			Name: "inputs", Args: []string{"file", "stream"}, Timeout: time.Minute,
			Inputs: []Input{{Name: "file", Path: path, Key: fileKey}, {Name: "stream", Reader: bytes.NewReader(sealedStream), Key: streamKey}}}
	}
	for _, inproc := range []bool{false, true} {
		t.Run(fmt.Sprintf("inprocess=%v", inproc), func(t *testing.T) {
			r := newRuntime(t, Options{InProcess: inproc, InProcessNoCancel: inproc})
			res := mustRun(t, r, cfg())
			wantOutcome(t, res, OutcomeExited, 0)
			want := line("file", file, int64(len(file)), fmt.Sprintf("%x", file[3:8])) + "\n" + line("stream", stream, 0, "error") + "\n"
			if string(res.Stdout) != want {
				t.Errorf("the guest read\n%s\nwant\n%s", res.Stdout, want)
			}
			if res.Report.ProgramSHA256 != fmt.Sprintf("%x", sha256.Sum256(mod)) {
				t.Errorf("report names program %s", res.Report.ProgramSHA256)
			}

			c := cfg()
			c.Inputs[0] = Input{Name: "file", Data: tampered, Key: fileKey}
			c.Args = []string{"file"}
			res = mustRun(t, r, c)
			wantOutcome(t, res, OutcomeExited, 0)
			if !strings.Contains(string(res.Stdout), "file read:") || strings.Contains(string(res.Stdout), "sha256=") {
				t.Errorf("a tampered chunk reached the guest: %q", res.Stdout)
			}

			for name, c := range map[string]*Config{
				"wrong module key":  func() *Config { c := cfg(); c.ModuleKey = streamKey; return c }(),
				"another program":   func() *Config { c := cfg(); c.ModuleSHA256[0] ^= 1; return c }(),
				"wrong input key":   func() *Config { c := cfg(); c.Inputs[0].Key = streamKey; return c }(),
				"input not sealed":  func() *Config { c := cfg(); c.Inputs[0] = Input{Name: "file", Data: file, Key: fileKey}; return c }(),
				"module not sealed": func() *Config { c := cfg(); c.SealedModule = &Input{Data: mod}; return c }(),
				"module cut short":  func() *Config { c := cfg(); c.SealedModule = &Input{Data: sealedMod[:len(sealedMod)-100]}; return c }(),
			} {
				res := mustRun(t, r, c)
				if res.Report.Outcome != OutcomeInvalid || res.Report.Error == "" {
					t.Errorf("%s: outcome %s (%q), want invalid with a reason", name, res.Report.Outcome, res.Report.Error)
				}
			}
		})
	}
}

// TestSealedModuleNeverCached: no native code of a sealed program is
// written to the compilation cache, and a warm pool is never preloaded
// with it (the parent never holds its plaintext to preload).
func TestSealedModuleNeverCached(t *testing.T) {
	dir := t.TempDir()
	mod := wasmExit(77)
	ct, key := sealForTest(t, mod)
	r := newRuntime(t, Options{DataDir: dir, WarmWorkers: 1})
	entries := func() int { return len(entryFiles(t, r, mod)) }
	before := entries()
	for range 2 {
		res := mustRun(t, r, &Config{SealedModule: &Input{Data: ct}, ModuleKey: key, ModuleSHA256: sha256.Sum256(mod), Timeout: time.Minute})
		wantOutcome(t, res, OutcomeExited, 77)
	}
	if after := entries(); after != before {
		t.Errorf("the compilation cache went from %d to %d entries after sealed runs", before, after)
	}
	r.jail.mu.Lock()
	hint := r.jail.hint
	r.jail.mu.Unlock()
	if hint != nil {
		t.Errorf("the pool keeps a sealed module as a preload hint")
	}
	// The same module unsealed is cached, as any other.
	res := mustRun(t, r, &Config{Module: mod, Timeout: time.Minute})
	wantOutcome(t, res, OutcomeExited, 77)
	waitEntry(t, r, mod)
}
