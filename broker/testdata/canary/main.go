// Command canary is the sealed program of the broker package's node tests:
// its data section holds a canary string set at build time
// (-ldflags "-X main.canary=…"), and it prints the canary's SHA-256, so
// that a run proves the worker had the plaintext without the output
// carrying the canary itself.
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
)

var canary string

func main() {
	sum := sha256.Sum256([]byte(canary))
	os.Stdout.WriteString(hex.EncodeToString(sum[:]) + "\n")
}
