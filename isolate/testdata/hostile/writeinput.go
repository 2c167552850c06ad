package main

import (
	"crypto/sha256"
	"fmt"
	"os"
)

func tryChange(what string, err error) {
	if err != nil {
		fmt.Printf("%s: refused: %v\n", what, err)
	} else {
		fmt.Printf("%s: ALLOWED\n", what)
	}
}

// writeinput tries to change /input/ in every way it can; every
// attempt must fail and the input must be unchanged.
func writeinput() {
	before, _ := os.ReadFile("/input/data")
	tryChange("writefile", os.WriteFile("/input/data", []byte("pwned"), 0o644))
	_, err := os.OpenFile("/input/data", os.O_RDWR, 0)
	tryChange("open-rdwr", err)
	_, err = os.OpenFile("/input/data", os.O_WRONLY|os.O_APPEND, 0)
	tryChange("open-append", err)
	_, err = os.Create("/input/new")
	tryChange("create", err)
	tryChange("remove", os.Remove("/input/data"))
	tryChange("rename", os.Rename("/input/data", "/output/stolen"))
	tryChange("truncate", os.Truncate("/input/data", 0))
	tryChange("mkdir", os.Mkdir("/input/dir", 0o755))
	f, err := os.Open("/input/data")
	if err == nil {
		_, err = f.Write([]byte("x"))
		tryChange("write-readonly-fd", err)
		f.Close()
	}
	after, _ := os.ReadFile("/input/data")
	fmt.Printf("unchanged: %v %x\n", string(before) == string(after), sha256.Sum256(after))
}
