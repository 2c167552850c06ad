package isolate

// Tiny hand-assembled modules for the cases that need no guest language.

func leb(n uint32) []byte {
	var b []byte
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func section(id byte, body ...[]byte) []byte {
	var b []byte
	for _, x := range body {
		b = append(b, x...)
	}
	return append(append([]byte{id}, leb(uint32(len(b)))...), b...)
}

func vec(items ...[]byte) []byte {
	b := leb(uint32(len(items)))
	for _, x := range items {
		b = append(b, x...)
	}
	return b
}

func str(s string) []byte { return append(leb(uint32(len(s))), s...) }

// wasmModule builds a module with one func type () -> (), optional imports
// of that type, a memory of memPages pages (exported as "memory"), and one
// function exported as _start whose body (without locals and end) is code.
func wasmModule(imports [][2]string, memPages uint32, code []byte) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = append(m, section(1, vec([]byte{0x60, 0, 0}))...)
	if len(imports) > 0 {
		var ims [][]byte
		for _, im := range imports {
			ims = append(ims, append(append(str(im[0]), str(im[1])...), 0, 0))
		}
		m = append(m, section(2, vec(ims...))...)
	}
	m = append(m, section(3, vec([]byte{0}))...)
	m = append(m, section(5, vec(append([]byte{0}, leb(memPages)...)))...)
	start := uint32(len(imports))
	m = append(m, section(7, vec(
		append(str("_start"), append([]byte{0}, leb(start)...)...),
		append(str("memory"), 2, 0),
	))...)
	body := append([]byte{0}, code...)
	body = append(body, 0x0b)
	m = append(m, section(10, vec(append(leb(uint32(len(body))), body...)))...)
	return m
}

var (
	wasmEmpty       = wasmModule(nil, 1, nil)
	wasmLoop        = wasmModule(nil, 1, []byte{0x03, 0x40, 0x0c, 0x00, 0x0b})
	wasmUnreachable = wasmModule(nil, 1, []byte{0x00})
	// _start calls itself forever: the call stack overflows.
	wasmRecurse       = wasmModule(nil, 1, []byte{0x10, 0x00})
	wasmUnknownImport = wasmModule([][2]string{{"env", "launch_missiles"}}, 1, nil)
	// memory.grow by 1 page in a loop until it fails, then unreachable:
	// loop { i32.const 1; memory.grow; i32.const -1; i32.ne; br_if 0 }; unreachable
	wasmGrowThenTrap = wasmModule(nil, 1, []byte{0x03, 0x40, 0x41, 0x01, 0x40, 0x00, 0x41, 0x7f, 0x47, 0x0d, 0x00, 0x0b, 0x00})
	// _start calls wasi proc_exit(7)... built in a test with the right type.
)

// wasmExit builds a module whose _start calls WASI proc_exit(code).
func wasmExit(code uint32) []byte {
	m := []byte("\x00asm\x01\x00\x00\x00")
	m = append(m, section(1, vec([]byte{0x60, 0, 0}, []byte{0x60, 1, 0x7f, 0}))...)
	m = append(m, section(2, vec(append(append(str("wasi_snapshot_preview1"), str("proc_exit")...), 0, 1)))...)
	m = append(m, section(3, vec([]byte{0}))...)
	m = append(m, section(5, vec([]byte{0, 1}))...)
	m = append(m, section(7, vec(append(str("_start"), 0, 1), append(str("memory"), 2, 0)))...)
	body := append([]byte{0, 0x41}, sleb(int64(int32(code)))...)
	body = append(body, 0x10, 0x00, 0x0b)
	m = append(m, section(10, vec(append(leb(uint32(len(body))), body...)))...)
	return m
}

func sleb(v int64) []byte {
	var b []byte
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
