package isolate

import (
	"context"
	"crypto/sha256"
)

// StandardHostCalls are the host calls every Cloister host offers: a node
// to the programs whose policies allow them, `cloister run` to every
// program it runs. Both are deterministic.
//
//	cloister.sha256/v1   the SHA-256 of the request (32 bytes), computed
//	                     by the host: a primitive the guest would
//	                     otherwise run in WebAssembly
//	cloister.echo/v1     the request itself: lets a program (and its
//	                     operator) check that host calls work, and
//	                     measure what one costs
func StandardHostCalls() map[string]HostCall {
	return map[string]HostCall{
		"cloister.sha256/v1": {Deterministic: true, MaxResponse: sha256.Size,
			Handle: func(_ context.Context, req []byte) ([]byte, error) {
				sum := sha256.Sum256(req)
				return sum[:], nil
			}},
		"cloister.echo/v1": {Deterministic: true,
			Handle: func(_ context.Context, req []byte) ([]byte, error) { return req, nil }},
	}
}
