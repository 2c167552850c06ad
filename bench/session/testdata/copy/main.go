// Command copy copies /input/in to /output/out, 1 MiB at a time: a guest
// whose output is as large as its input, for the session benchmark of
// large outputs.
package main

import (
	"io"
	"os"

	"github.com/cloisterhq/cloister/guest"
)

func main() {
	in, err := os.Open("/input/in")
	if err != nil {
		guest.Fail("copy: %v", err)
	}
	out, err := os.Create("/output/out")
	if err != nil {
		guest.Fail("copy: %v", err)
	}
	if _, err := io.CopyBuffer(out, in, make([]byte, 1<<20)); err != nil {
		guest.Fail("copy: %v", err)
	}
	if err := out.Close(); err != nil {
		guest.Fail("copy: %v", err)
	}
}
