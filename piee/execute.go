package piee

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"time"

	"github.com/cloisterhq/cloister/isolate"
	"github.com/cloisterhq/cloister/ledger/challenge"
)

// Runner runs programs: a node's isolate runtime (node.Runner).
type Runner interface {
	Run(ctx context.Context, cfg *isolate.Config) (*isolate.Result, error)
}

// ResultFile is where an operator leaves Q.
const ResultFile = "result"

// Execute runs operator op on the input drawn from seed (hex) in a
// deterministic isolate and returns the run as a reveal states it. An
// error means no result (the node is unavailable for this challenge),
// never a wrong one: a result is whatever the isolate let the program do,
// including being stopped at its memory limit or deadline.
func Execute(ctx context.Context, r Runner, op challenge.Operator, seed, class string) (challenge.Run, error) {
	module, err := lookupModule(op)
	if err != nil {
		return challenge.Run{}, err
	}
	sb, err := hex.DecodeString(seed)
	if err != nil || len(sb) != 32 {
		return challenge.Run{}, fmt.Errorf("piee: seed %.16q: want 64 hex digits", seed)
	}
	cfg := &isolate.Config{Module: module, Name: "operators.wasm", Args: append(append([]string{}, op.Args...), seed),
		Memory: op.Memory, Timeout: time.Duration(op.TimeoutMS) * time.Millisecond, MaxOutput: 16 << 20, MaxOutputFiles: 4,
		Deterministic: true}
	copy(cfg.Seed[:], sb)
	res, err := r.Run(ctx, cfg)
	if err != nil {
		return challenge.Run{}, fmt.Errorf("piee: running %s: %w", op.Name, err)
	}
	defer res.Close()
	run := challenge.Run{Outcome: string(res.Report.Outcome), ExitCode: res.Report.ExitCode, Engine: Engine,
		Protections: append([]string{}, res.Report.Protections...), Class: class}
	if run.Protections == nil {
		run.Protections = []string{}
	}
	for i := range res.Outputs {
		if o := &res.Outputs[i]; o.Name == ResultFile {
			h := sha256.New()
			if _, err := io.Copy(h, o.Open()); err != nil {
				return challenge.Run{}, fmt.Errorf("piee: reading %s's result: %w", op.Name, err)
			}
			run.Output = hex.EncodeToString(h.Sum(nil))
		}
	}
	return run, nil
}
