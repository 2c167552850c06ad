// Command cloister runs confidential, verifiable computations among parties
// who do not trust each other. See README.md for the quick start.
package main

import (
	"os"

	"github.com/cloisterhq/cloister/internal/cli"
	"github.com/cloisterhq/cloister/isolate"
)

func main() {
	// The isolate runtime re-executes this binary as its jailed worker; that
	// path must be taken before any flag parsing or other initialisation.
	if isolate.IsWorker() {
		os.Exit(isolate.WorkerMain())
	}
	os.Exit(cli.Execute())
}
