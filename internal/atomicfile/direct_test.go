package atomicfile

import (
	"bytes"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// TestDirect writes streams of awkward sizes in awkward pieces through a
// Direct file, reads them back before the commit (Reader, and ReadAt in
// the middle of a stream), and checks every byte after the commit; where
// the file system takes O_DIRECT, it checks that the descriptor had it
// (so the test proves the direct path, not the fallback).
func TestDirect(t *testing.T) {
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{0, 1, directAlign - 1, directAlign, directBlock - 1, directBlock, directBlock + 1, 2*directBlock + 12345}
	for _, size := range sizes {
		for _, piece := range []int{1 << 10, 64<<10 + 16, directBlock, 3 << 20} {
			data := randomBytes(rng, size)
			path := filepath.Join(dir, "f")
			f, err := Create(path, 0o600, Direct())
			if err != nil {
				t.Fatal(err)
			}
			direct := f.d != nil
			for rest := data; len(rest) > 0; {
				n := min(piece, len(rest))
				if m, err := f.Write(rest[:n]); err != nil || m != n {
					t.Fatalf("size %d piece %d: write %d of %d: %v", size, piece, m, n, err)
				}
				rest = rest[n:]
			}
			if direct && size >= directBlock && !f.d.on && size%directAlign == 0 {
				t.Errorf("size %d: the descriptor left O_DIRECT before its end", size)
			}
			r, err := f.Reader(int64(size))
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			r.Close()
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("size %d piece %d: Reader gave %d bytes (%v), want the %d written", size, piece, len(got), err, size)
			}
			if err := f.Commit(); err != nil {
				t.Fatal(err)
			}
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("size %d piece %d: committed %d bytes (%v), want %d", size, piece, len(got), err, size)
			}
		}
	}
	if f, err := Create(filepath.Join(dir, "probe"), 0o600, Direct()); err == nil {
		if f.d == nil {
			t.Logf("the file system of %s refuses O_DIRECT: only the fallback was tested", dir)
		}
		f.Abort()
	}

	// ReadAt mid-stream: the descriptor leaves O_DIRECT, later writes
	// still land in order.
	data := randomBytes(rng, 3*directBlock+7)
	path := filepath.Join(dir, "g")
	f, err := Create(path, 0o600, Direct())
	if err != nil {
		t.Fatal(err)
	}
	f.Write(data[:directBlock+100])
	buf := make([]byte, 200)
	if n, err := f.ReadAt(buf, directBlock-100); err != nil || !bytes.Equal(buf[:n], data[directBlock-100:directBlock+100]) {
		t.Fatalf("ReadAt in the middle: %d bytes, %v", n, err)
	}
	f.Write(data[directBlock+100:])
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after ReadAt: committed %d bytes (%v), want %d", len(got), err, len(data))
	}

	// A Reader closed early stops its read-ahead; one asked for more
	// than the file holds says so.
	f, _ = Create(filepath.Join(dir, "h"), 0o600, Direct())
	f.Write(data)
	r, _ := f.Reader(int64(len(data)))
	io.ReadFull(r, buf)
	r.Close()
	r, _ = f.Reader(int64(len(data)) + directBlock)
	if _, err := io.Copy(io.Discard, r); err != io.ErrUnexpectedEOF {
		t.Errorf("reading past the end: %v, want %v", err, io.ErrUnexpectedEOF)
	}
	r.Close()
	f.Abort()
	if m, _ := filepath.Glob(filepath.Join(dir, TempGlob)); len(m) > 0 {
		t.Errorf("left behind: %v", m)
	}
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}
