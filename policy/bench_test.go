package policy

import "testing"

// BenchmarkParse measures parsing, validating and canonicalizing the
// four-principal example policy (what a node does per CreateSession).
func BenchmarkParse(b *testing.B) {
	data := encode(b, psiDoc(b))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Parse(data); err != nil {
			b.Fatal(err)
		}
	}
}
