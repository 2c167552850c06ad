// Command shamir reconstructs a secret from Shamir secret shares over
// GF(2^8) with the AES reduction polynomial x^8+x^4+x^3+x+1 (0x11B), the
// scheme Veracruz's shamir-secret-sharing example uses.
//
// Every input file is one share: its first byte is the share's x coordinate
// (non-zero, distinct across shares) and the remaining bytes are the y
// values, one per secret byte; all shares have the same length. The program
// interpolates the polynomial through all given shares (Lagrange) and
// evaluates it at x = 0, byte by byte, writing the secret to /output/secret
// and to stdout.
//
// Threshold semantics: with k shares the program recovers any secret that
// was split with a polynomial of degree < k (threshold ≤ k). Given fewer
// shares than the threshold it cannot tell, and it outputs a different,
// meaningless byte string — Shamir's scheme is information-theoretically
// silent about the secret below the threshold, so no error is possible.
//
//	GOOS=wasip1 GOARCH=wasm go build -o shamir.wasm ./examples/shamir
//	cloister run --input a=share-1 --input b=share-2 --input c=share-3 \
//	    --output-dir out shamir.wasm
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/cloisterhq/cloister/guest"
)

func main() {
	if err := run(); err != nil {
		guest.Fail("shamir: %v", err)
	}
}

func run() error {
	names, err := guest.Inputs()
	if err != nil {
		return err
	}
	if len(names) == 0 {
		return errors.New("no shares: give each share as an input file")
	}
	shares := make([][]byte, len(names))
	for i, n := range names {
		if shares[i], err = guest.ReadInput(n); err != nil {
			return err
		}
	}
	secret, err := Reconstruct(shares)
	if err != nil {
		// Name the file, not its index: parties know their shares by name.
		var se *ShareError
		if errors.As(err, &se) {
			return fmt.Errorf("input %q: %s", names[se.Index], se.Msg)
		}
		return err
	}
	if err := guest.WriteOutput("secret", secret); err != nil {
		return err
	}
	_, err = os.Stdout.Write(secret)
	return err
}
