// Package piee is proof of isolated execution (docs/piee.md): the
// built-in registry of challenge operators, their deterministic execution
// in a node's isolate, the agent by which a node takes part in epochs
// (answers its challenge, re-executes its peers', commits, reveals,
// states verdicts), and an audit that recomputes an epoch's verdicts from
// the ledger alone. The entries and the rules the ledger applies are
// package challenge's and the ledger's (rule version 9).
package piee

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"runtime/debug"

	"github.com/cloisterhq/cloister/ledger/challenge"
)

// operatorsWasm is operators/operators.wasm, built reproducibly by
// operators/build.sh from operators/ (checked by a test).
//
//go:embed operators/operators.wasm
var operatorsWasm []byte

// ProgramSHA256 is the hex SHA-256 of the built-in operator program.
var ProgramSHA256 = func() string { h := sha256.Sum256(operatorsWasm); return hex.EncodeToString(h[:]) }()

// Module returns the program whose SHA-256 is digest (hex), if this
// binary carries it.
func Module(digest string) ([]byte, bool) {
	if digest == ProgramSHA256 {
		return operatorsWasm, true
	}
	return nil, false
}

// Builtin is the operator registry a consortium publishes to start with
// (cloister piee publish): four arithmetic operators — the seed's
// PyTorch-style operators in fixed point — and four isolation probes.
// Timeouts are generous for the arithmetic (a slow node must not look
// wrong: a timeout is an outcome, so it would); the probes' limits are
// what they test.
func Builtin() []challenge.Operator {
	op := func(name, class string, memory, timeoutMS, cost uint64, args ...string) challenge.Operator {
		return challenge.Operator{Name: name, ProgramSHA256: ProgramSHA256, Args: append([]string{name}, args...),
			Class: class, Memory: memory, TimeoutMS: timeoutMS, CostMS: cost}
	}
	return []challenge.Operator{
		op("matmul", challenge.ClassArith, 64<<20, 60_000, 400, "32"),
		op("hashchain", challenge.ClassArith, 64<<20, 60_000, 300, "20000"),
		op("sort", challenge.ClassArith, 64<<20, 60_000, 300, "20000"),
		op("nn", challenge.ClassArith, 64<<20, 60_000, 300, "28"),
		op("probe-memory", challenge.ClassProbe, 32<<20, 60_000, 300, "256"),
		op("probe-deadline", challenge.ClassProbe, 32<<20, 1_500, 1500),
		op("probe-network", challenge.ClassProbe, 32<<20, 60_000, 300),
		op("probe-files", challenge.ClassProbe, 32<<20, 60_000, 300),
	}
}

// Engine names the WebAssembly engine and its version, as a reveal
// states it (deterministic runs record their engine).
var Engine = func() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "github.com/tetratelabs/wazero" {
				return "wazero " + d.Version
			}
		}
	}
	return "wazero"
}()

func lookupModule(op challenge.Operator) ([]byte, error) {
	m, ok := Module(op.ProgramSHA256)
	if !ok {
		return nil, fmt.Errorf("piee: operator %s names program %s, which this node does not carry", op.Name, op.ProgramSHA256)
	}
	return m, nil
}
