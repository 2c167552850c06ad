// Command hostcall shows host calls: it asks its node for the SHA-256 of
// every input through the host call cloister.sha256/v1 (the node computes
// it natively), checks each answer against its own SHA-256, and writes
// /output/digests.json, a list of {"name", "sha256"} sorted by name. It
// fails if the node's answer differs or the call is not allowed: the
// policy must list {"name": "cloister.sha256/v1"} under "host_calls"
// (`cloister run` allows every call the runtime offers).
//
//	cloister run --input a=a.bin --output-dir out examples/hostcall/hostcall.wasm
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/cloisterhq/cloister/guest"
)

// Digest is one entry of digests.json.
type Digest struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// hostSHA256 asks the node (tests replace it).
var hostSHA256 = func(b []byte) ([]byte, error) { return guest.HostCall("cloister.sha256/v1", b) }

func main() {
	if err := run(); err != nil {
		guest.Fail("hostcall: %v", err)
	}
}

func run() error {
	names, err := guest.Inputs()
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return errors.New("no inputs to hash")
	}
	digests := make([]Digest, 0, len(names))
	for _, n := range names {
		data, err := guest.ReadInput(n)
		if err != nil {
			return err
		}
		got, err := hostSHA256(data)
		if err != nil {
			return fmt.Errorf("input %q: %w", n, err)
		}
		own := sha256.Sum256(data)
		if !bytes.Equal(got, own[:]) {
			return fmt.Errorf("input %q: the node says its SHA-256 is %x, it is %x", n, got, own)
		}
		digests = append(digests, Digest{Name: n, SHA256: hex.EncodeToString(got)})
		fmt.Printf("%x  %s  (from the node, checked)\n", got, n)
	}
	return guest.WriteJSON("digests.json", digests)
}
