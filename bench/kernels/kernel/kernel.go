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
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
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
	return MatMulWith(n, func(c, a, b []float64, n int) {
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
	})
}

// MatMulWith is MatMul with the product c = a·b (c zeroed, every matrix
// n×n) done by mul (a host primitive).
func MatMulWith(n int, mul func(c, a, b []float64, n int)) uint64 {
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
	mul(c, a, b, n)
	sum := 0.0
	for _, v := range c {
		sum += v
	}
	return math.Float64bits(sum)
}

// SHA256 hashes a 1 MiB pseudo-random buffer rounds times over (one
// stream of rounds MiB) and returns the first 8 bytes of the digest.
func SHA256(rounds int) uint64 { return SHA256With(rounds, sha256.New) }

// SHA256With is SHA256 with the hashing done by newHash's hash (the host
// primitive's, guest/crypto.NewSHA256): the stream is written as it
// comes, never gathered.
func SHA256With(rounds int, newHash func() hash.Hash) uint64 {
	buf := randomBytes(1 << 20)
	h := newHash()
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
func Sort(n int) uint64 { return SortWith(n, slices.Sort) }

// SortWith is Sort with the sorting done by sort (a host primitive).
func SortWith(n int, sort func([]uint64)) uint64 {
	rng := splitmix64(seed)
	a := make([]uint64, n)
	for i := range a {
		a[i] = rng.next()
	}
	sort(a)
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

// NN runs the forward pass of a small convolutional network over n
// pseudo-random 28×28 single-channel float32 images: a 3×3 convolution
// with 8 filters and ReLU (8×26×26), a dense layer of 64 units with ReLU,
// and a dense layer of 10 outputs. It returns the bits of the float32 sum
// of all outputs. Every implementation does the same operations in the
// same order, so the bits agree.
func NN(n int) uint64 {
	const (
		side, k, filters = 28, 3, 8
		conv             = side - k + 1 // 26
		flat             = filters * conv * conv
		hidden, outputs  = 64, 10
	)
	rng := splitmix64(seed)
	weight := func() float32 { return float32(int64(rng.next()>>40)-(1<<23)) / (1 << 26) }
	cw := make([]float32, filters*k*k)
	for i := range cw {
		cw[i] = weight()
	}
	w1 := make([]float32, hidden*flat)
	for i := range w1 {
		w1[i] = weight()
	}
	w2 := make([]float32, outputs*hidden)
	for i := range w2 {
		w2[i] = weight()
	}
	img := make([]float32, side*side)
	act := make([]float32, flat)
	h := make([]float32, hidden)
	var sum float32
	for im := 0; im < n; im++ {
		for i := range img {
			img[i] = float32(rng.next()>>40) / (1 << 24)
		}
		for f := 0; f < filters; f++ {
			for y := 0; y < conv; y++ {
				for x := 0; x < conv; x++ {
					var s float32
					for dy := 0; dy < k; dy++ {
						for dx := 0; dx < k; dx++ {
							s += img[(y+dy)*side+x+dx] * cw[f*k*k+dy*k+dx]
						}
					}
					act[(f*conv+y)*conv+x] = max(s, 0)
				}
			}
		}
		for j := 0; j < hidden; j++ {
			var s float32
			row := w1[j*flat : j*flat+flat]
			for i, a := range act {
				s += a * row[i]
			}
			h[j] = max(s, 0)
		}
		for o := 0; o < outputs; o++ {
			var s float32
			for j := 0; j < hidden; j++ {
				s += h[j] * w2[o*hidden+j]
			}
			sum += s
		}
	}
	return uint64(math.Float32bits(sum))
}

// AESGCM seals a 1 MiB pseudo-random buffer mib times with AES-256-GCM
// (a fresh 96-bit nonce per MiB: the MiB's index) and returns the first 8
// bytes of the last tag XORed with the count of ciphertext bytes.
func AESGCM(mib int) uint64 {
	return AESGCMWith(mib, func(key []byte) (cipher.AEAD, error) {
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, err
		}
		return cipher.NewGCM(block)
	})
}

// AESGCMWith is AESGCM with the sealing done by newAEAD's AEAD (the host
// primitive's, guest/crypto.NewAESGCM), into one output buffer reused
// for every MiB.
func AESGCMWith(mib int, newAEAD func(key []byte) (cipher.AEAD, error)) uint64 {
	buf := randomBytes(1 << 20)
	key := randomBytes(32)
	gcm, err := newAEAD(key)
	if err != nil {
		panic(err)
	}
	out := make([]byte, 0, len(buf)+gcm.Overhead())
	nonce := make([]byte, gcm.NonceSize())
	var sum uint64
	for i := 0; i < mib; i++ {
		binary.BigEndian.PutUint64(nonce[4:], uint64(i))
		out = gcm.Seal(out[:0], nonce, buf, nil)
		sum = binary.BigEndian.Uint64(out[len(out)-16:]) ^ uint64(len(out))
	}
	return sum
}

// CSV returns a table of about mb MB, one "key,amount" row per line
// after a header: keys k00000–k09999, amounts with two decimals, all from
// splitmix64.
func CSV(mb int) []byte {
	rng := splitmix64(seed)
	doc := make([]byte, 0, mb<<20+64)
	doc = append(doc, "key,amount\n"...)
	for len(doc) < mb<<20 {
		r := rng.next()
		doc = append(doc, 'k')
		key := r % 10000
		for d := uint64(10000); d > 0; d /= 10 {
			doc = append(doc, byte('0'+key/d%10))
		}
		doc = append(doc, ',')
		doc = strconv.AppendUint(doc, r>>20%100000, 10)
		doc = append(doc, '.')
		cents := r >> 40 % 100
		doc = append(doc, byte('0'+cents/10), byte('0'+cents%10))
		doc = append(doc, '\n')
	}
	return doc
}

// GroupBy reads a CSV from CSV with encoding/csv, sums the amounts (in
// cents) and counts the rows of each key, and folds the groups in key
// order: Σ (i+1)·(sum_i + count_i) over the sorted keys (wrapping).
func GroupBy(r io.Reader) (uint64, error) {
	cr := csv.NewReader(bufio.NewReaderSize(r, 1<<16))
	cr.ReuseRecord = true
	type group struct{ sum, count uint64 }
	groups := map[string]*group{}
	if _, err := cr.Read(); err != nil { // the header
		return 0, err
	}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
		if len(rec) != 2 {
			return 0, fmt.Errorf("row with %d fields", len(rec))
		}
		whole, frac, ok := strings.Cut(rec[1], ".")
		w, err1 := strconv.ParseUint(whole, 10, 64)
		f, err2 := strconv.ParseUint(frac, 10, 64)
		if !ok || err1 != nil || err2 != nil || len(frac) != 2 {
			return 0, fmt.Errorf("amount %q", rec[1])
		}
		g := groups[rec[0]]
		if g == nil {
			g = &group{}
			groups[rec[0]] = g
		}
		g.sum += w*100 + f
		g.count++
	}
	keys := make([]string, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var sum uint64
	for i, k := range keys {
		sum += uint64(i+1) * (groups[k].sum + groups[k].count)
	}
	return sum, nil
}

// Main is a guest's main: it reads its command line, PROGRAM KERNEL
// SIZE, runs kernels[KERNEL](SIZE), prints the checksum and exits 0, or
// says what went wrong on stderr and exits 1. "none" (start-up only) is
// always there.
func Main(kernels map[string]func(n int) (uint64, error)) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	args := os.Args
	if len(args) != 3 {
		fail(errors.New("usage: guest KERNEL SIZE"))
	}
	n, err := strconv.Atoi(args[2])
	if err != nil || n < 0 {
		fail(fmt.Errorf("size %q: not a non-negative integer", args[2]))
	}
	run, ok := kernels[args[1]]
	if args[1] == "none" {
		run, ok = func(int) (uint64, error) { return 0, nil }, true
	}
	if !ok {
		fail(fmt.Errorf("unknown kernel %q (or none in this guest)", args[1]))
	}
	sum, err := run(n)
	if err != nil {
		fail(err)
	}
	fmt.Println(sum)
}

// Plain makes a kernel that cannot fail one for Main.
func Plain(k func(n int) uint64) func(int) (uint64, error) {
	return func(n int) (uint64, error) { return k(n), nil }
}
