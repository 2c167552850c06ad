package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// outputcheat tries to hold more under /output/ than the budget allows,
// by one way each (argv[1]):
//
//	write     fd_write until refused
//	append    the same on a file opened O_APPEND
//	pwrite    fd_pwrite far beyond the end (a sparse file)
//	grow      fd_filestat_set_size (ftruncate) to twice the budget
//	allocate  fd_allocate the same
//	orphans   create, fill, unlink and keep the handle open, again and again
//	truncate  fill a file, unlink it, shrink it through a second handle,
//	          then fill another
//	rename    fill a file, rename another over it while it is open, then
//	          write on through the old handle
//
// It keeps count of the bytes its files hold (every accepted write or
// growth adds, every shrink it makes subtracts) and stops at the first
// refused write or create, or after 4 GiB. It prints the most it ever held
// and what stopped it; the isolate must have stopped it at the budget.
func outputcheat() {
	mode := ""
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	chunk := bytes.Repeat([]byte("c"), 1<<20)
	const stop = 4 << 30
	var held, most int64
	add := func(n int64) {
		held += n
		most = max(most, held)
	}
	// fill writes until refused; it returns the bytes it added.
	fill := func(f *os.File) (int64, error) {
		var added int64
		for held < stop {
			n, err := f.Write(chunk)
			add(int64(n))
			added += int64(n)
			if err != nil {
				return added, err
			}
		}
		return added, nil
	}
	var keep []*os.File
	var err error
	switch mode {
	case "write", "append":
		flag := os.O_WRONLY | os.O_CREATE
		if mode == "append" {
			flag |= os.O_APPEND
		}
		var f *os.File
		if f, err = os.OpenFile("/output/w", flag, 0o644); err == nil {
			_, err = fill(f)
		}
	case "pwrite":
		var f *os.File
		if f, err = os.Create("/output/p"); err == nil {
			for off := int64(0); err == nil && held < stop; off += 64 << 20 {
				var n int
				n, err = f.WriteAt([]byte("x"), off)
				if n > 0 {
					add(off + 1 - held) // the hole counts too
				}
			}
		}
	case "grow", "allocate":
		var f *os.File
		if f, err = os.Create("/output/g"); err == nil {
			for size := int64(1 << 16); err == nil && size <= stop; size *= 2 {
				if mode == "grow" {
					err = f.Truncate(size)
				} else {
					err = fdAllocate(f, size)
				}
				if err == nil {
					add(size - held)
				}
			}
		}
	case "orphans", "truncate", "rename":
		for i := 0; held < stop; i++ {
			name := fmt.Sprintf("/output/f%d", i)
			var f, g *os.File
			if f, err = os.Create(name); err != nil {
				break
			}
			keep = append(keep, f)
			var added int64
			if added, err = fill(f); !errors.Is(err, syscall.ENOSPC) || added == 0 {
				break
			}
			switch mode {
			case "orphans":
				err = os.Remove(name)
			case "truncate":
				if g, err = os.OpenFile(name, os.O_RDWR, 0); err != nil {
					break
				}
				keep = append(keep, g)
				if err = os.Remove(name); err != nil {
					break
				}
				if err = g.Truncate(0); err == nil {
					add(-added)
				}
			case "rename":
				if err = os.WriteFile("/output/empty", nil, 0o644); err != nil {
					break
				}
				if err = os.Rename("/output/empty", name); err != nil {
					break
				}
				// The old file is unnamed but open: writing on must
				// still count.
				var n int
				n, err = f.Write(chunk)
				add(int64(n))
			}
			if err != nil {
				break
			}
		}
	default:
		fmt.Fprintf(os.Stderr, "outputcheat: unknown mode %q\n", mode)
		os.Exit(64)
	}
	fmt.Printf("most held %d; now %d; handles %d; stopped by: %v\n", most, held, len(keep), err)
}

//go:wasmimport wasi_snapshot_preview1 fd_allocate
//go:noescape
func wasiFdAllocate(fd int32, offset, length uint64) uint32

// fdAllocate makes f at least size bytes long with fd_allocate, which Go's
// syscall package does not offer.
func fdAllocate(f *os.File, size int64) error {
	if errno := wasiFdAllocate(int32(f.Fd()), 0, uint64(size)); errno != 0 {
		return syscall.Errno(errno)
	}
	return nil
}
