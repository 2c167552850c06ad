// Command operators is the program of Cloister's challenge operators
// (proof of isolated execution, docs/piee.md): deterministic computations
// whose result any node re-computes bit for bit, and probes whose result
// is the isolation the node's isolate enforces. It is run as
//
//	operators NAME PARAMETER SEED
//
// where SEED is 64 hex digits; the operator generates its input U from
// the seed (no input files), and writes its result Q to /output/result.
// Everything is integer or fixed-point arithmetic: no floating point, no
// map iteration order, no clock, no randomness but the seed — so every
// engine, every node and native code agree on every byte.
//
// Operators (PyTorch names in brackets where there is one):
//
//	matmul N       C = A·B for N×N int32 matrices [torch.matmul]
//	hashchain N    SHA-256 iterated N times from the seed
//	sort N         N uint64 sorted ascending [torch.sort]
//	nn N           fixed-point CNN forward pass on an N×N image: conv 3×3
//	               (4 channels) [nn.Conv2d], ReLU [nn.ReLU], 2×2 max-pool
//	               [nn.MaxPool2d], dense to 10 [nn.Linear], softmax in Q16
//	               [nn.Softmax]
//	probe-memory N allocates and touches N MiB: past the operator's memory
//	               limit the isolate must stop it (Q: outcome "memory")
//	probe-deadline busy-loops: the isolate must kill it at the deadline
//	               (Q: outcome "timeout")
//	probe-network  tries to reach the network; writes what it reached
//	probe-files    tries to read and write outside /input and /output;
//	               writes what it could
package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"strconv"

	"github.com/cloisterhq/cloister/piee/operators/ops"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: operators NAME [PARAMETER] SEED")
	}
	name := os.Args[1]
	seed, err := hex.DecodeString(os.Args[len(os.Args)-1])
	if err != nil || len(seed) != 32 {
		fail("seed: want 64 hex digits")
	}
	param := 0
	if len(os.Args) == 4 {
		if param, err = strconv.Atoi(os.Args[2]); err != nil || param < 1 || param > 1<<24 {
			fail("parameter: want an integer from 1 to 2^24")
		}
	}
	out, err := ops.Compute(name, param, seed)
	if err != nil {
		fail("%v", err)
	}
	if err := os.WriteFile("/output/result", out, 0o644); err != nil {
		fail("writing /output/result: %v", err)
	}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "operators: "+format+"\n", a...)
	os.Exit(1)
}
