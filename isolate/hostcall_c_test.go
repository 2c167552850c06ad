package isolate

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// hostCallC uses guest/c/cloister_host.h: a long echo through the short-
// buffer path and cloister_host_response, and a call that is not allowed.
const hostCallC = `#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cloister_host.h"

int main(void) {
	static const char echo[] = "cloister.test.echo/v1";
	size_t n = 100000;
	unsigned char *req = malloc(n), *resp = malloc(n);
	for (size_t i = 0; i < n; i++) req[i] = (unsigned char)(i * 7 + 3);
	unsigned char small[10];
	uint32_t got = 0;
	uint32_t st = cloister_host_call(echo, strlen(echo), req, n, small, sizeof small, &got);
	if (st != CLOISTER_HOST_SHORT_BUFFER || got != n) { printf("call: status %u, length %u\n", st, got); return 1; }
	st = cloister_host_response(resp, n, &got);
	if (st != CLOISTER_HOST_OK || got != n || memcmp(req, resp, n) != 0) { printf("response: status %u, length %u\n", st, got); return 1; }
	st = cloister_host_response(resp, n, &got);
	if (st != CLOISTER_HOST_NO_RESPONSE) { printf("second response: status %u\n", st); return 1; }
	static const char secret[] = "cloister.test.secret/v1";
	st = cloister_host_call(secret, strlen(secret), req, 1, resp, n, &got);
	if (st != CLOISTER_HOST_NOT_ALLOWED) { printf("not allowed: status %u\n", st); return 1; }
	printf("c ok\n");
	return 0;
}
`

// TestHostCallsFromC: the C header's declarations match the runtime's ABI.
func TestHostCallsFromC(t *testing.T) {
	clang, err := exec.LookPath("clang")
	if err != nil {
		t.Skip("clang is not installed (scripts/test installs it with wasi-libc)")
	}
	_, self, _, _ := runtime.Caller(0)
	include := filepath.Join(filepath.Dir(self), "..", "guest", "c")
	dir := t.TempDir()
	src := filepath.Join(dir, "hostcall.c")
	if err := os.WriteFile(src, []byte(hostCallC), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "hostcall.wasm")
	if msg, err := exec.Command(clang, "--target=wasm32-wasi", "-O2", "-I", include, "-o", out, src).CombinedOutput(); err != nil {
		t.Fatalf("clang: %v: %s", err, msg)
	}
	mod, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	r := newRuntime(t, Options{})
	res := mustRun(t, r, &Config{Module: mod, HostCalls: testCalls(nil), Timeout: time.Minute})
	wantOutcome(t, res, OutcomeExited, 0)
	if strings.TrimSpace(string(res.Stdout)) != "c ok" || res.Report.HostCalls != 1 {
		t.Errorf("stdout %q, %d calls", res.Stdout, res.Report.HostCalls)
	}
}
