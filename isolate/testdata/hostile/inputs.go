package main

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
)

// inputs reads each input named in its arguments and prints, per input,
// the size stat reports, the SHA-256 and length of what reading it to the
// end gives, and the 5 bytes at offset 3 read with pread (or the error):
//
//	NAME size=N sha256=HEX read=N pread=HEX|error
//
// With the argument "-skip" first it reads nothing and exits at once (a
// guest that never reads its inputs).
func inputs() {
	args := os.Args[1:]
	if len(args) > 0 && args[0] == "-skip" {
		fmt.Println("read nothing")
		return
	}
	for _, name := range args {
		f, err := os.Open("/input/" + name)
		if err != nil {
			fmt.Printf("%s open: %v\n", name, err)
			continue
		}
		st, err := f.Stat()
		if err != nil {
			fmt.Printf("%s stat: %v\n", name, err)
			continue
		}
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			fmt.Printf("%s read: %v\n", name, err)
			continue
		}
		p := make([]byte, 5)
		pread := ""
		if k, err := f.ReadAt(p, 3); err != nil && k < len(p) {
			pread = "error"
		} else {
			pread = fmt.Sprintf("%x", p)
		}
		fmt.Printf("%s size=%d sha256=%x read=%d pread=%s\n", name, st.Size(), h.Sum(nil), n, pread)
		f.Close()
	}
}
