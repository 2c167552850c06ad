package main

import (
	"fmt"
	"os"
)

// manyfiles creates files under /output/ until creation fails.
func manyfiles() {
	for i := 0; i < 100000; i++ {
		f, err := os.Create(fmt.Sprintf("/output/f%05d", i))
		if err != nil {
			fmt.Printf("created %d files; then: %v\n", i, err)
			return
		}
		f.Close()
	}
	fmt.Println("created 100000 files")
}
