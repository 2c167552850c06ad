package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
)

func listDir(p string) string {
	ents, err := os.ReadDir(p)
	if err != nil {
		return "error: " + err.Error()
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return "[" + strings.Join(names, " ") + "]"
}

func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return "error: " + err.Error()
	}
	return fmt.Sprintf("%d bytes", len(b))
}

// fsescape looks for host files through every path it can think
// of and prints what it finds, one "path: result" line each.
func fsescape() {
	for _, p := range []string{"/", "/input", "/output", "/input/../..", "/input/../../..", "/output/..", "..", ".", "/etc", "/proc", "/tmp"} {
		fmt.Printf("list %s: %s\n", p, listDir(p))
	}
	for _, p := range []string{"/etc/passwd", "/input/../etc/passwd", "/input/../../etc/passwd", "../../../../etc/passwd", "/proc/self/environ", "/input/data", "/input/data/..", "/input/./data"} {
		fmt.Printf("read %s: %s\n", p, readFile(p))
	}
	if err := os.Symlink("/etc/passwd", "/output/link"); err != nil {
		fmt.Printf("symlink: error: %v\n", err)
	} else {
		fmt.Printf("symlink: made; read: %s\n", readFile("/output/link"))
	}
	if err := os.Mkdir("/output/sub", 0o755); err != nil {
		fmt.Printf("mkdir: error: %v\n", err)
	}
	fmt.Printf("env: %q\n", os.Environ())
	fmt.Printf("args: %q\n", os.Args)
}
