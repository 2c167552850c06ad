package main

import (
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/cloisterhq/cloister/examples/internal/guesttest"
)

// fakeHost answers natively what the node answers in an isolate.
func fakeHost(t *testing.T, answer func([]byte) ([]byte, error)) {
	own := hostSHA256
	hostSHA256 = answer
	t.Cleanup(func() { hostSHA256 = own })
}

func TestSample(t *testing.T) {
	fakeHost(t, func(b []byte) ([]byte, error) { s := sha256.Sum256(b); return s[:], nil })
	root := guesttest.Root(t, map[string][]byte{"hello.txt": guesttest.Testdata(t, "input/hello.txt"), "empty": guesttest.Testdata(t, "input/empty")})
	if err := run(); err != nil {
		t.Fatal(err)
	}
	if got, want := guesttest.Output(t, root, "digests.json"), guesttest.Testdata(t, "output/digests.json"); string(got) != string(want) {
		t.Fatalf("digests.json = %s, want %s", got, want)
	}
}

// TestWrongAnswer: a node that answers wrongly is caught.
func TestWrongAnswer(t *testing.T) {
	fakeHost(t, func(b []byte) ([]byte, error) { return make([]byte, 32), nil })
	guesttest.Root(t, map[string][]byte{"a": []byte("a")})
	if err := run(); err == nil || !strings.Contains(err.Error(), "the node says") {
		t.Fatalf("run with a lying host = %v", err)
	}
}

// TestNotAllowed: a refused call fails the program with the reason.
func TestNotAllowed(t *testing.T) {
	fakeHost(t, func([]byte) ([]byte, error) { return nil, errors.New("not allowed") })
	guesttest.Root(t, map[string][]byte{"a": []byte("a")})
	if err := run(); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("run with the call refused = %v", err)
	}
}
