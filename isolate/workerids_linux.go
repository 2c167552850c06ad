package isolate

import (
	"errors"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
)

// A root node gives every live worker a host uid and gid of its own,
// which the worker switches to before the guest runs. With one shared id
// (nobody, as before), every worker of every node on the host counted
// against that id's RLIMIT_NPROC, which the kernel checks per real uid:
// ~300 concurrent workers (a few threads each) and the next one's thread
// creation failed. An id of its own also keeps a worker from signalling,
// tracing or reading /proc of another even without its PID namespace, and
// gives it its own per-user kernel limits (inotify, message queues).
//
// The ids are not in /etc/passwd and own no file: a worker's root is an
// empty tmpfs and its results travel through pipes. Each Runtime draws a
// block of workerIDBlock ids at random from a range far above the ids
// distributions hand out to users and to containers' subordinate ranges,
// and reuses an id only once the worker that had it has been reaped.
const (
	workerIDFirst  = 0x70000000
	workerIDBlock  = 1 << 16
	workerIDBlocks = 0x0fff // blocks in the range: 0x70000000–0x7fff0000
)

// workerIDs is one Runtime's block of worker ids.
type workerIDs struct {
	mu    sync.Mutex
	base  uint32
	next  uint32
	inUse map[uint32]bool
}

// nobodyID is the one id every worker shares where a block cannot be had.
const nobodyID = 65534

func newWorkerIDs() *workerIDs {
	return &workerIDs{base: workerIDFirst + rand.Uint32N(workerIDBlocks)*workerIDBlock, inUse: map[uint32]bool{}}
}

// idsMapped reports whether every id from first to last is mapped in the
// uid and gid maps of this process's user namespace. A node that is root
// inside a user namespace of its own (a rootless container) usually maps
// only a small range; its workers then share nobody, as before.
func idsMapped(first, last uint32) bool {
	for _, f := range []string{"/proc/self/uid_map", "/proc/self/gid_map"} {
		b, err := os.ReadFile(f)
		if err != nil || !rangeMapped(string(b), first, last) {
			return false
		}
	}
	return true
}

// rangeMapped reports whether one line of an id map (inside, outside,
// count) covers first..last.
func rangeMapped(idMap string, first, last uint32) bool {
	for _, line := range strings.Split(idMap, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		in, err1 := strconv.ParseUint(f[0], 10, 32)
		n, err2 := strconv.ParseUint(f[2], 10, 33)
		if err1 == nil && err2 == nil && uint64(first) >= in && uint64(last) < in+n {
			return true
		}
	}
	return false
}

// contains reports whether id is in the block.
func (p *workerIDs) contains(id int) bool {
	return id >= int(p.base) && id < int(p.base)+workerIDBlock
}

// get returns an id no live worker of this Runtime has.
func (p *workerIDs) get() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for range workerIDBlock {
		id := p.base + p.next
		p.next = (p.next + 1) % workerIDBlock
		if !p.inUse[id] {
			p.inUse[id] = true
			return int(id), nil
		}
	}
	return 0, errors.New("isolate: all 65536 worker ids of this runtime are in use")
}

// put returns an id once its worker has been reaped.
func (p *workerIDs) put(id int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.inUse, uint32(id))
}
