package ledger

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cloisterhq/cloister/internal/httpguard"
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
		// Each is connected (to one peer at least: the testnet's peers are
		// not a full mesh) and has caught up.
		var st statusJSON
		c.getJSON("/v1/status", &st)
		if st.Peers < 1 || st.CatchingUp {
			t.Errorf("validator %d status: %d peers, catching up %v; want some, false", vi, st.Peers, st.CatchingUp)
		}
		if status, b := c.do("GET", "/readyz", nil); status != 200 {
			t.Errorf("validator %d readyz: %d %s", vi, status, b)
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

// The API listener is guarded (package httpguard): a body trickling one
// byte every 300 ms is cut off, and the validator keeps serving.
func TestValidatorAPISlowBody(t *testing.T) {
	homes, err := GenerateTestnet(t.TempDir(), 1, TestnetOptions{ChainID: "test-chain"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := StartValidator(ctx, homes[0].Home, StartOptions{Logger: testLogger(t),
		APILimits: httpguard.Limits{BodyTimeout: time.Second, MinBodyRate: 1000}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	stop := make(chan struct{})
	defer close(stop)
	pr, pw := io.Pipe()
	go func() {
		for {
			select {
			case <-stop:
				pw.Close()
				return
			case <-time.After(300 * time.Millisecond):
				pw.Write([]byte("{"))
			}
		}
	}()
	req, _ := http.NewRequest("POST", v.APIURL()+"/v1/entries", pr)
	req.ContentLength = 32 << 10
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("cut off: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("a body trickling at ~3 bytes/s was still being read after 15 s")
	}
	if got := v.conns.SlowBodies.Load(); got != 1 {
		t.Fatalf("slow bodies counted: %d, want 1", got)
	}
	c := &apiClient{t: t, base: v.APIURL()}
	if status, b := c.do("GET", "/v1/status", nil); status != 200 {
		t.Fatalf("status after the attack: %d %s", status, b)
	}
}
