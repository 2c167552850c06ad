package verify

import (
	"testing"
	"time"
)

// benchTx is a transaction of the size the ledger benchmarks commit.
func benchTx(b *testing.B) []byte {
	body := map[string]any{"seq": 12345, "text": "session=8f2c1a7e4b9d; event=session.created; policy=3b1f9a0c52e7d4a8b6c0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6"}
	se, err := NewEntryWithNonce(seedKey(7), "note", body, 99, time.Unix(1_800_000_000, 0))
	if err != nil {
		b.Fatal(err)
	}
	return se.Encode()
}

func BenchmarkDecodeEntry(b *testing.B) {
	tx := benchTx(b)
	b.SetBytes(int64(len(tx)))
	for b.Loop() {
		if _, err := DecodeEntry(tx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifySignature(b *testing.B) {
	se, err := DecodeEntry(benchTx(b))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if err := se.VerifySignature(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEntryDistinct decodes a different transaction each time,
// as a validator does, instead of one the caches know by heart.
func BenchmarkDecodeEntryDistinct(b *testing.B) {
	txs := make([][]byte, 4096)
	for i := range txs {
		body := map[string]any{"seq": i, "text": "session=8f2c1a7e4b9d; event=session.created; policy=3b1f9a0c52e7d4a8b6c0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6"}
		se, err := NewEntryWithNonce(seedKey(byte(i)), "note", body, uint64(i), time.Unix(1_800_000_000, 0))
		if err != nil {
			b.Fatal(err)
		}
		txs[i] = se.Encode()
	}
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := DecodeEntry(txs[i%len(txs)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
