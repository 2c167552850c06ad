// Command writeinput tries to change /input/ in every way it can; every
// attempt must fail and the input must be unchanged.
package main

import (
	"crypto/sha256"
	"fmt"
	"os"
)

func try(what string, err error) {
	if err != nil {
		fmt.Printf("%s: refused: %v\n", what, err)
	} else {
		fmt.Printf("%s: ALLOWED\n", what)
	}
}

func main() {
	before, _ := os.ReadFile("/input/data")
	try("writefile", os.WriteFile("/input/data", []byte("pwned"), 0o644))
	_, err := os.OpenFile("/input/data", os.O_RDWR, 0)
	try("open-rdwr", err)
	_, err = os.OpenFile("/input/data", os.O_WRONLY|os.O_APPEND, 0)
	try("open-append", err)
	_, err = os.Create("/input/new")
	try("create", err)
	try("remove", os.Remove("/input/data"))
	try("rename", os.Rename("/input/data", "/output/stolen"))
	try("truncate", os.Truncate("/input/data", 0))
	try("mkdir", os.Mkdir("/input/dir", 0o755))
	f, err := os.Open("/input/data")
	if err == nil {
		_, err = f.Write([]byte("x"))
		try("write-readonly-fd", err)
		f.Close()
	}
	after, _ := os.ReadFile("/input/data")
	fmt.Printf("unchanged: %v %x\n", string(before) == string(after), sha256.Sum256(after))
}
