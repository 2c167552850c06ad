package main

import (
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
