package sealed

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestReaderAt: any range of a sealed file's plaintext reads back in
// place; tampering anywhere is refused — the size-fixing last chunk at
// once, any other chunk when it is read — and a wrong key at once.
func TestReaderAt(t *testing.T) {
	t.Parallel()
	pt := pseudoRandom(3*chunk+100, 11)
	ct, k, _ := sealBytes(t, pt)
	r, n, err := NewReaderAt(bytes.NewReader(ct), int64(len(ct)), k)
	if err != nil || n != int64(len(pt)) {
		t.Fatalf("NewReaderAt: %v, size %d", err, n)
	}
	for _, rng := range [][2]int{{0, 10}, {chunk - 5, chunk + 5}, {2*chunk + 7, 3*chunk + 100}, {0, 3*chunk + 100}, {3*chunk + 99, 3*chunk + 100}} {
		got := make([]byte, rng[1]-rng[0])
		k, err := r.ReadAt(got, int64(rng[0]))
		if (err != nil && err != io.EOF) || k != len(got) || !bytes.Equal(got, pt[rng[0]:rng[1]]) {
			t.Errorf("ReadAt %v: %d bytes, %v", rng, k, err)
		}
	}
	if _, err := r.ReadAt(make([]byte, 1), int64(len(pt))+1); err == nil {
		t.Error("a read past the end succeeded")
	}

	p := payloadStart(t, ct)
	flip := func(i int) []byte { c := bytes.Clone(ct); c[i] ^= 1; return c }
	middle := flip(p + encChunk + 5)
	r, _, err = NewReaderAt(bytes.NewReader(middle), int64(len(middle)), k)
	if err != nil {
		t.Fatalf("a file with a bad middle chunk is refused at open (only the last chunk is checked then): %v", err)
	}
	if _, err := r.ReadAt(make([]byte, 10), 5); err != nil {
		t.Errorf("reading a good chunk of it: %v", err)
	}
	if _, err := r.ReadAt(make([]byte, 10), chunk+3); !errors.Is(err, ErrTampered) {
		t.Errorf("reading the bad chunk: %v, want ErrTampered", err)
	}
	for name, c := range map[string][]byte{"last chunk flipped": flip(len(ct) - 3), "truncated": ct[:len(ct)-50], "extended": append(bytes.Clone(ct), 0)} {
		if _, _, err := NewReaderAt(bytes.NewReader(c), int64(len(c)), k); !errors.Is(err, ErrTampered) {
			t.Errorf("%s: %v, want ErrTampered", name, err)
		}
	}
	other := Key{1}
	if _, _, err := NewReaderAt(bytes.NewReader(ct), int64(len(ct)), &other); !errors.Is(err, ErrWrongKey) {
		t.Errorf("wrong key: %v, want ErrWrongKey", err)
	}
	if _, _, err := NewReaderAt(bytes.NewReader([]byte("not sealed")), 10, k); !errors.Is(err, ErrFormat) {
		t.Errorf("not a sealed file: %v, want ErrFormat", err)
	}
}

func TestCiphertextSize(t *testing.T) {
	for _, n := range []int{0, 1, chunk - 1, chunk, chunk + 1, 3 * chunk, 3*chunk + 100} {
		ct, _, _ := sealBytes(t, pseudoRandom(n, uint64(n)))
		if got := CiphertextSize(int64(n)); got != int64(len(ct)) {
			t.Errorf("CiphertextSize(%d) = %d, sealing gives %d", n, got, len(ct))
		}
	}
}
