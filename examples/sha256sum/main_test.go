package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/cloisterhq/cloister/examples/internal/guesttest"
)

func TestSample(t *testing.T) {
	names := []string{"empty", "hello.txt", "random.bin"}
	in := map[string][]byte{}
	for _, n := range names {
		in[n] = guesttest.Testdata(t, "input/"+n)
	}
	root := guesttest.Root(t, in)
	if err := run(); err != nil {
		t.Fatal(err)
	}
	if got, want := guesttest.Output(t, root, "sha256.json"), guesttest.Testdata(t, "output/sha256.json"); string(got) != string(want) {
		t.Fatalf("sha256.json = %s, want %s", got, want)
	}
}

func TestHash(t *testing.T) {
	// FIPS 180-2 test vector.
	d, err := Hash("abc", strings.NewReader("abc"))
	if err != nil || d.SHA256 != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" || d.Bytes != 3 {
		t.Fatalf("Hash(abc) = %+v, %v", d, err)
	}
	if _, err := Hash("x", iotest.ErrReader(iotest.ErrTimeout)); err != iotest.ErrTimeout {
		t.Fatalf("read error not returned: %v", err)
	}
}

func TestNoInputs(t *testing.T) {
	guesttest.Root(t, nil)
	if err := run(); err == nil || !strings.Contains(err.Error(), "no inputs") {
		t.Fatalf("run without inputs = %v", err)
	}
}

// TestDirectoryInput: the files of a directory input (a pinned directory)
// are hashed as DIR/FILE, in name order with the other inputs.
func TestDirectoryInput(t *testing.T) {
	root := guesttest.Root(t, map[string][]byte{"model/weights.bin": []byte("w"), "model/config.json": []byte("{}"), "a.txt": []byte("abc"), "z": nil})
	if err := run(); err != nil {
		t.Fatal(err)
	}
	var got []Digest
	if err := json.Unmarshal(guesttest.Output(t, root, "sha256.json"), &got); err != nil {
		t.Fatal(err)
	}
	want := []Digest{
		{"a.txt", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"model/config.json", 2, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
		{"model/weights.bin", 1, "50e721e49c013f00c62cf59f2163542a9d8df02464efeb615d31051b0fddc326"},
		{"z", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("sha256.json = %+v\nwant %+v", got, want)
	}
}
