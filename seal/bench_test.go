package seal

import (
	"fmt"
	"testing"
)

// BenchmarkSeal and BenchmarkOpen measure one envelope per operation: the
// MLKEM768-X25519 encapsulation or decapsulation dominates small messages,
// AES-256-GCM large ones.
func BenchmarkSeal(b *testing.B) {
	k := mustKey(b)
	for _, n := range []int{1 << 10, 1 << 20} {
		pt := make([]byte, n)
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := Seal(k.PublicKey(), pt, []byte("bench"), nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkOpen(b *testing.B) {
	k := mustKey(b)
	for _, n := range []int{1 << 10, 1 << 20} {
		env, err := Seal(k.PublicKey(), make([]byte, n), []byte("bench"), nil)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("%dB", n), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := Open(k, env, []byte("bench"), nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
