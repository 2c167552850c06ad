package ledger

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func startTestnet(t *testing.T, n int) ([]TestnetValidator, []*Validator) {
	t.Helper()
	homes, err := GenerateTestnet(t.TempDir(), n, TestnetOptions{ChainID: "test-chain"})
	if err != nil {
		t.Fatal(err)
	}
	vs := make([]*Validator, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, h := range homes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			vs[i], errs[i] = StartValidator(ctx, h.Home, StartOptions{Logger: testLogger(t)})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, v := range vs {
			if v != nil {
				v.Close()
			}
		}
	})
	return homes, vs
}

// TestFourValidators runs four validators in this process: entries sent
// to any of them are committed by all, in the same order, and the
// checkpoints carry signatures of more than 2/3 of them.
func TestFourValidators(t *testing.T) {
	homes, vs := startTestnet(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key := newTestKey(t)
	const n = 40
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = vs[i%4].Append(ctx, signEntry(t, key, KindNote, map[string]any{"i": i}))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	clients := make([]*apiClient, 4)
	for i, h := range homes {
		clients[i] = &apiClient{t: t, base: h.APIURL}
	}
	cp := clients[0].verifiedCheckpoint(n)
	status, note := clients[0].do("GET", fmt.Sprintf("/v1/checkpoint?size=%d", cp.Size), nil)
	if status != 200 {
		t.Fatal(status)
	}
	if sigs := countSignatures(note); sigs < 3 {
		t.Fatalf("checkpoint carries %d signatures, want at least 3 of 4:\n%s", sigs, note)
	}
	// Every validator serves the same log, provable against that checkpoint.
	for vi, c := range clients {
		for i := range uint64(n) {
			if err := c.checkInclusion(i, cp); err != nil {
				t.Fatalf("validator %d entry %d: %v", vi, i, err)
			}
		}
	}
}

func countSignatures(note []byte) int {
	n := 0
	for _, line := range splitLines(note) {
		if len(line) > 4 && string(line[:4]) == "— " {
			n++
		}
	}
	return n
}

func splitLines(b []byte) [][]byte {
	var out [][]byte
	for len(b) > 0 {
		i := 0
		for i < len(b) && b[i] != '\n' {
			i++
		}
		out = append(out, b[:i])
		if i < len(b) {
			i++
		}
		b = b[i:]
	}
	return out
}
