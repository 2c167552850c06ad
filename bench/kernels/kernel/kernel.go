// Package kernel holds the compute kernels of the Wasm-versus-native
// benchmark. The same functions run natively (called directly by the
// benchmark) and inside the isolate (compiled into bench/kernels/guest for
// wasip1); bench/kernels/c/kernels.c implements the identical algorithms in
// C, and every implementation must return the same checksum for the same
// size, which the benchmark checks on every run.
//
// All inputs come from splitmix64 with a fixed seed, so no data has to be
// shipped except the JSON document, which the benchmark generates with
// JSONDoc and hands to every implementation as a file.
package kernel

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// splitmix64 is the generator all implementations share (Steele, Lea,
// Flood 2014; the reference constants).
type splitmix64 uint64

func (s *splitmix64) next() uint64 {
	*s += 0x9e3779b97f4a7c15
	z := uint64(*s)
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

const seed = 42

// IntLoop runs n rounds of xorshift64 mixed into an accumulator: pure
// 64-bit integer ALU work with a data-dependent branch, no memory traffic.
func IntLoop(n int) uint64 {
	x, acc := uint64(88172645463325252), uint64(0)
	for i := 0; i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if x&1 == 0 {
			acc += x >> 3
		} else {
			acc ^= x * 31
		}
	}
	return acc
}

// MatMul multiplies two n×n matrices of float64 in [0,1) (i-k-j loop
// order, no blocking) and returns the bits of the sum of the product's
// entries, summed in row-major order.
func MatMul(n int) uint64 {
	rng := splitmix64(seed)
	a := make([]float64, n*n)
	b := make([]float64, n*n)
	for i := range a {
		a[i] = float64(rng.next()>>11) / (1 << 53)
	}
	for i := range b {
		b[i] = float64(rng.next()>>11) / (1 << 53)
	}
	c := make([]float64, n*n)
	for i := 0; i < n; i++ {
		ci := c[i*n : i*n+n]
		for k := 0; k < n; k++ {
			aik := a[i*n+k]
			bk := b[k*n : k*n+n]
			for j := range ci {
				ci[j] += aik * bk[j]
			}
		}
	}
	sum := 0.0
	for _, v := range c {
		sum += v
	}
	return math.Float64bits(sum)
}

// SHA256 hashes a 1 MiB pseudo-random buffer rounds times over (one
// stream of rounds MiB) and returns the first 8 bytes of the digest.
func SHA256(rounds int) uint64 {
	buf := randomBytes(1 << 20)
	h := sha256.New()
	for r := 0; r < rounds; r++ {
		h.Write(buf)
	}
	return binary.BigEndian.Uint64(h.Sum(nil))
}

func randomBytes(n int) []byte {
	rng := splitmix64(seed)
	buf := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		binary.LittleEndian.PutUint64(buf[i:], rng.next())
	}
	return buf
}

// Sort sorts n pseudo-random uint64 and returns Σ a[i]·(i+1) (wrapping),
// which depends on the order.
func Sort(n int) uint64 {
	rng := splitmix64(seed)
	a := make([]uint64, n)
	for i := range a {
		a[i] = rng.next()
	}
	slices.Sort(a)
	var sum uint64
	for i, v := range a {
		sum += v * uint64(i+1)
	}
	return sum
}

// JSONDoc returns a JSON array of n records such as
//
//	{"id":7,"name":"user-7-1f3a","score":12.25,"active":false,"tags":["t1","t4"]}
//
// about 85 bytes each. Scores are multiples of 1/4, exact in binary.
func JSONDoc(n int) []byte {
	rng := splitmix64(seed)
	doc := []byte{'['}
	for i := 0; i < n; i++ {
		r := rng.next()
		if i > 0 {
			doc = append(doc, ',')
		}
		doc = append(doc, `{"id":`...)
		doc = strconv.AppendInt(doc, int64(i), 10)
		doc = append(doc, `,"name":"user-`...)
		doc = strconv.AppendInt(doc, int64(i), 10)
		doc = append(doc, '-')
		doc = strconv.AppendUint(doc, r&0xffff, 16)
		doc = append(doc, `","score":`...)
		doc = strconv.AppendFloat(doc, float64(r>>16&0xffff)/4, 'f', -1, 64)
		doc = append(doc, `,"active":`...)
		doc = strconv.AppendBool(doc, r>>32&1 == 1)
		doc = append(doc, `,"tags":[`...)
		for t := 0; t < int(r>>33&3); t++ {
			if t > 0 {
				doc = append(doc, ',')
			}
			doc = append(doc, `"t`...)
			doc = strconv.AppendInt(doc, int64(r>>(35+4*t)&15), 10)
			doc = append(doc, '"')
		}
		doc = append(doc, "]}"...)
	}
	return append(doc, ']')
}

// JSONParse decodes doc (from JSONDoc) into generic values with
// encoding/json and folds every record into a checksum:
// Σ id + len(name) + 4·score + active + Σ len(tag).
func JSONParse(doc []byte) (uint64, error) {
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		return 0, err
	}
	recs, ok := v.([]any)
	if !ok {
		return 0, fmt.Errorf("document is %T, want an array", v)
	}
	var sum uint64
	for _, r := range recs {
		m, ok := r.(map[string]any)
		if !ok {
			return 0, fmt.Errorf("record is %T, want an object", r)
		}
		id, _ := m["id"].(float64)
		name, _ := m["name"].(string)
		score, _ := m["score"].(float64)
		sum += uint64(id) + uint64(len(name)) + uint64(score*4)
		if a, _ := m["active"].(bool); a {
			sum++
		}
		tags, _ := m["tags"].([]any)
		for _, t := range tags {
			s, _ := t.(string)
			sum += uint64(len(s))
		}
	}
	return sum, nil
}
