package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"unsafe"

	"github.com/cloisterhq/cloister/guest"
)

// hostcall makes host calls (argv[1] says which) and prints what came back:
//
//	echo N        cloister.test.echo/v1 with N bytes; prints "echo N ok"
//	notallowed    a call the job may not make
//	toolarge N    cloister.test.echo/v1 with N bytes, past its limit
//	fail          cloister.test.fail/v1, whose handler returns an error
//	flood N       N echo calls of 1 KiB, as fast as it can
//	badptr        the raw import with a buffer outside memory
//	block         cloister.test.block/v1, which never answers by itself
func hostcall() {
	mode, n := "", 0
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	if len(os.Args) > 2 {
		n, _ = strconv.Atoi(os.Args[2])
	}
	pattern := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7 + 3)
		}
		return b
	}
	switch mode {
	case "echo", "toolarge":
		req := pattern(n)
		resp, err := guest.HostCall("cloister.test.echo/v1", req)
		switch {
		case errors.Is(err, guest.ErrCallTooLarge):
			fmt.Printf("%s %d too large\n", mode, n)
		case err != nil:
			fmt.Printf("%s %d error: %v\n", mode, n, err)
		case !bytes.Equal(resp, req):
			fmt.Printf("%s %d: response of %d bytes differs\n", mode, n, len(resp))
		default:
			fmt.Printf("%s %d ok\n", mode, n)
		}
	case "notallowed":
		_, err := guest.HostCall("cloister.test.secret/v1", []byte("x"))
		fmt.Printf("notallowed: %v %v\n", errors.Is(err, guest.ErrCallNotAllowed), err)
	case "fail":
		_, err := guest.HostCall("cloister.test.fail/v1", []byte("why"))
		var ce *guest.CallError
		fmt.Printf("fail: %v %v\n", errors.As(err, &ce), err)
	case "flood":
		req := pattern(1024)
		for i := 0; i < n; i++ {
			if _, err := guest.HostCall("cloister.test.echo/v1", req); err != nil {
				fmt.Printf("flood: call %d: %v\n", i, err)
				return
			}
		}
		fmt.Printf("flood %d ok\n", n)
	case "badptr":
		name := "cloister.test.echo/v1"
		status := rawHostCall(uint32(uintptr(unsafe.Pointer(unsafe.StringData(name)))), uint32(len(name)), 0, 0, 0xfffffff0, 64, uint32(uintptr(unsafe.Pointer(&rawLen))))
		fmt.Printf("badptr: status %d\n", status)
	case "block":
		_, err := guest.HostCall("cloister.test.block/v1", nil)
		fmt.Printf("block: %v\n", err)
	default:
		fmt.Fprintf(os.Stderr, "hostcall: unknown mode %q\n", mode)
		os.Exit(64)
	}
}

// rawLen receives the response length of rawHostCall (a global: its
// address is passed as a number).
var rawLen uint32

// rawHostCall is the import with addresses as plain numbers, so that one
// outside memory can be passed.
//
//go:wasmimport cloister_host_v1 call
func rawHostCall(name, nameLen, req, reqLen, resp, respCap, respLen uint32) uint32
