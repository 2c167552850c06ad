package federation

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// programCache keeps the published programs a holder ran, each read from
// its file and checked against its SHA-256 once, so a call does not read
// and hash a program of megabytes again. It holds at most maxCachedPrograms
// programs of maxCachedBytes in all, dropping the least recently used.
type programCache struct {
	dir   string
	mu    sync.Mutex
	progs map[string]*cachedProgram
	tick  uint64
	bytes int
}

type cachedProgram struct {
	wasm []byte
	used uint64
}

const (
	maxCachedPrograms = 16
	maxCachedBytes    = 128 << 20
)

// get returns the program whose SHA-256 is sum, checked.
func (pc *programCache) get(sum string) ([]byte, error) {
	pc.mu.Lock()
	pc.tick++
	if p, ok := pc.progs[sum]; ok {
		p.used = pc.tick
		pc.mu.Unlock()
		return p.wasm, nil
	}
	pc.mu.Unlock()
	prog, err := os.ReadFile(filepath.Join(pc.dir, sum+".wasm"))
	if err != nil {
		return nil, errNoProgram
	}
	if digest(prog) != sum {
		return nil, errProgramChanged
	}
	if len(prog) > maxCachedBytes {
		return prog, nil
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.progs == nil {
		pc.progs = map[string]*cachedProgram{}
	}
	if _, ok := pc.progs[sum]; !ok {
		for len(pc.progs) >= maxCachedPrograms || pc.bytes+len(prog) > maxCachedBytes {
			pc.evictLocked()
		}
		pc.progs[sum] = &cachedProgram{wasm: prog, used: pc.tick}
		pc.bytes += len(prog)
	}
	return prog, nil
}

func (pc *programCache) evictLocked() {
	var oldest string
	for s, p := range pc.progs {
		if oldest == "" || p.used < pc.progs[oldest].used {
			oldest = s
		}
	}
	pc.bytes -= len(pc.progs[oldest].wasm)
	delete(pc.progs, oldest)
}

var (
	errNoProgram      = fmt.Errorf("no such program")
	errProgramChanged = fmt.Errorf("the program's bytes are not its SHA-256")
)
