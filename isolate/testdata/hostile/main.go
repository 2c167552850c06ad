// Command hostile holds every hostile test program of the isolate package in
// one module, so that the tests compile one Go guest rather than seven (a
// Go guest takes seconds to compile, minutes in a -race build). Like
// busybox, it does what its name (argv[0], Config.Name) says:
//
//	accel  determinism  fixedpoint  fsescape  flood  hostcall  inputs
//	manyfiles  membomb  netdial  outputcheat  writeinput
package main

import (
	"fmt"
	"os"
	"path"
)

func main() {
	progs := map[string]func(){
		"accel":       accel,
		"determinism": determinism,
		"fixedpoint":  fixedpoint,
		"flood":       flood,
		"fsescape":    fsescape,
		"hostcall":    hostcall,
		"inputs":      inputs,
		"manyfiles":   manyfiles,
		"membomb":     membomb,
		"netdial":     netdial,
		"outputcheat": outputcheat,
		"writeinput":  writeinput,
	}
	name := ""
	if len(os.Args) > 0 {
		name = path.Base(os.Args[0])
	}
	prog, ok := progs[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "hostile: unknown program %q\n", name)
		os.Exit(64)
	}
	prog()
}
