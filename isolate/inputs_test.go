package isolate

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestInputKinds: a guest reads inputs of each kind through the
// descriptors the host side opened — a file by path (pread anywhere), bytes
// in a sealed memfd, a stream through a pipe (in order: size 0, pread
// elsewhere than the current position refused) — and gets their exact
// bytes, in a worker and in process.
func TestInputKinds(t *testing.T) {
	file := make([]byte, 100_000)
	data := make([]byte, 70_000)
	stream := make([]byte, 300_000)
	for _, b := range [][]byte{file, data, stream} {
		rand.Read(b)
	}
	path := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(path, file, 0o600); err != nil {
		t.Fatal(err)
	}
	line := func(name string, b []byte, size int64, pread string) string {
		return fmt.Sprintf("%s size=%d sha256=%x read=%d pread=%s", name, size, sha256.Sum256(b), len(b), pread)
	}
	want := strings.Join([]string{
		line("file", file, int64(len(file)), fmt.Sprintf("%x", file[3:8])),
		line("data", data, int64(len(data)), fmt.Sprintf("%x", data[3:8])),
		line("stream", stream, 0, "error"),
		line("empty", nil, 0, "error"),
	}, "\n") + "\n"
	for _, inproc := range []bool{false, true} {
		t.Run(fmt.Sprintf("inprocess=%v", inproc), func(t *testing.T) {
			r := newRuntime(t, Options{InProcess: inproc, InProcessNoCancel: inproc})
			res := mustRun(t, r, &Config{Module: hostileGuest(t), Name: "inputs", Args: []string{"file", "data", "stream", "empty"},
				Inputs: []Input{{Name: "file", Path: path}, {Name: "data", Data: data},
					{Name: "stream", Reader: bytes.NewBuffer(stream)}, {Name: "empty", Data: nil}},
				Timeout: time.Minute})
			wantOutcome(t, res, OutcomeExited, 0)
			if string(res.Stdout) != want {
				t.Errorf("the guest read\n%s\nwant\n%s", res.Stdout, want)
			}
		})
	}
}

// endless is a stream that never ends; it counts the reads made of it.
type endless struct{ reads atomic.Int64 }

func (e *endless) Read(p []byte) (int, error) {
	e.reads.Add(1)
	clear(p)
	return len(p), nil
}

// TestStreamInputNeverRead: a guest that never reads its (endless) stream
// input exits and the run returns at once; the host stops feeding the
// stream when the run ends, and leaves no descriptor open.
func TestStreamInputNeverRead(t *testing.T) {
	r := newRuntime(t, Options{})
	hostileGuest(t)
	before := openFDs(t)
	src := &endless{}
	// Exited, not timed out: the host did not keep the run waiting on
	// the stream (mustRun bounds the wait; no wall-clock bound, the
	// compile is part of the run).
	res := mustRun(t, r, &Config{Module: hostileGuest(t), Name: "inputs", Args: []string{"-skip"},
		Inputs: []Input{{Name: "stream", Reader: src}}, Timeout: time.Minute})
	wantOutcome(t, res, OutcomeExited, 0)
	res.Close()
	// The copy ends with the run: the reads stop.
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := src.reads.Load()
		time.Sleep(200 * time.Millisecond)
		if src.reads.Load() == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stream is still being read 10 s after the run (%d reads)", n)
		}
	}
	// Workers are reaped in the background; give it a moment.
	for i := 0; i < 50 && openFDs(t) > before; i++ {
		time.Sleep(100 * time.Millisecond)
	}
	if after := openFDs(t); after > before {
		t.Errorf("%d descriptors open after the run, %d before", after, before)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}
