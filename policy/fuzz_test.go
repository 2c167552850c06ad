package policy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse: any byte string either parses into a policy that validates and
// whose canonical form re-parses to the same hash, or fails with ErrSyntax
// or a *ValidationError that names at least one field. Never a panic.
func FuzzParse(f *testing.F) {
	f.Add(encode(f, psiDoc(f)))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"name":"x","name":"y"}`))
	f.Add([]byte(`{"isolates":[{"class":"tpm","platform_keys":["-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"]}]}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"limits":{"memory":"99999999999TiB"},"replicas":1e3}`))
	if files, err := filepath.Glob("../examples/policies/*.json"); err == nil {
		for _, p := range files {
			if b, err := os.ReadFile(p); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			var ve *ValidationError
			switch {
			case errors.Is(err, ErrSyntax):
			case errors.As(err, &ve):
				if len(ve.Problems) == 0 {
					t.Fatal("ValidationError without problems")
				}
				for _, pr := range ve.Problems {
					if pr.Field == "" || pr.Message == "" {
						t.Fatalf("problem without field or message: %+v", pr)
					}
				}
			default:
				t.Fatalf("unexpected error kind %T: %v", err, err)
			}
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("parsed policy does not validate: %v", err)
		}
		q, err := Parse(p.Canonical())
		if err != nil {
			t.Fatalf("canonical form does not parse: %v", err)
		}
		if q.Hash() != p.Hash() || !bytes.Equal(q.Canonical(), p.Canonical()) {
			t.Fatal("canonical form is not a fixed point")
		}
	})
}
