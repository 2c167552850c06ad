package isolate

import (
	"context"
	"testing"
	"time"
)

// FuzzCompile feeds arbitrary bytes to the host side of module loading (the
// section scan for the memory check, wazero's decoder, validator and
// compiler, the import check). Nothing may panic; whatever is not a valid
// WASI command must come back as OutcomeInvalid (or, if it happens to be
// valid, run to some outcome within its deadline).
func FuzzCompile(f *testing.F) {
	for _, m := range [][]byte{wasmEmpty, wasmLoop, wasmUnreachable, wasmRecurse, wasmUnknownImport, wasmGrowThenTrap, wasmExit(3), []byte("\x00asm\x01\x00\x00\x00"), nil, []byte("\x00asm\x01\x00\x00\x00\x05\x03\x01\x00\xff")} {
		f.Add(m)
	}
	ex := &executor{}
	f.Fuzz(func(t *testing.T, module []byte) {
		_ = moduleMinMemory(module)
		cfg := &Config{Module: module, Timeout: 200 * time.Millisecond, Memory: 1 << 20}
		j, rep, err := resolve(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if rep != nil {
			if rep.Outcome != OutcomeInvalid {
				t.Fatalf("resolve gave %s", rep.Outcome)
			}
			return
		}
		files, _, err := openJobFiles(j, cfg, "")
		if err != nil {
			t.Fatal(err)
		}
		defer files.close()
		j.Cancel = true
		ctx, cancel := context.WithTimeout(context.Background(), j.Timeout)
		defer cancel()
		res, err := ex.execute(ctx, j, nil, nil)
		if err != nil {
			t.Fatalf("host error: %v", err)
		}
		switch res.Report.Outcome {
		case OutcomeExited, OutcomeTimeout, OutcomeMemory, OutcomeTrap, OutcomeInvalid:
		default:
			t.Fatalf("outcome %q", res.Report.Outcome)
		}
		if res.Report.Outcome == OutcomeInvalid && res.Report.Error == "" {
			t.Fatal("invalid without a reason")
		}
	})
}
