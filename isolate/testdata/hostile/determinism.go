package main

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"time"
)

// determinism prints everything a run could differ in: the wall
// clock, monotonic time, random bytes from crypto/rand and math/rand, map
// iteration order, and hashes of the inputs; it writes random bytes to an
// output. Under --deterministic two runs with the same seed must agree byte
// for byte.
func determinism() {
	start := time.Now()
	fmt.Println("now:", start.UTC().Format(time.RFC3339Nano))
	time.Sleep(10 * time.Millisecond)
	fmt.Println("slept ≥10ms:", time.Since(start) >= 10*time.Millisecond)
	var b [16]byte
	rand.Read(b[:])
	fmt.Printf("crypto/rand: %x\n", b)
	fmt.Println("math/rand:", mrand.Uint64())
	m := map[int]int{}
	for i := 0; i < 32; i++ {
		m[i] = i
	}
	order := ""
	for k := range m {
		order += fmt.Sprint(k, ",")
	}
	fmt.Println("map order:", order)
	in, err := os.ReadFile("/input/data")
	fmt.Printf("input: %x %v\n", sha256.Sum256(in), err)
	st, err := os.Stat("/input/data")
	if err == nil {
		fmt.Println("input mtime:", st.ModTime().UTC().Format(time.RFC3339Nano))
	}
	out := make([]byte, 4096)
	rand.Read(out)
	if err := os.WriteFile("/output/random.bin", out, 0o644); err != nil {
		fmt.Println("write:", err)
		os.Exit(1)
	}
	st, _ = os.Stat("/output/random.bin")
	fmt.Println("output mtime:", st.ModTime().UTC().Format(time.RFC3339Nano))
	fmt.Println("elapsed:", time.Since(start))
}
