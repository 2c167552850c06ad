// Package workerbuild builds the lean isolate worker (cmd/cloister-isolate)
// for tests and benchmarks, which otherwise re-execute their own, much
// larger, test binary as the worker.
package workerbuild

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
)

var (
	once     sync.Once
	dir      string
	path     string
	buildErr error
)

// Build compiles cmd/cloister-isolate without cgo into a temporary
// directory (once per process) and returns its path. Call Cleanup when the
// process is done with it.
func Build() (string, error) {
	once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		dir, err = os.MkdirTemp("", "cloister-isolate-")
		if err != nil {
			buildErr = err
			return
		}
		path = filepath.Join(dir, "cloister-isolate")
		cmd := exec.Command(goTool, "build", "-o", path, "github.com/cloisterhq/cloister/cmd/cloister-isolate")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building cloister-isolate: %v\n%s", err, out)
		}
	})
	return path, buildErr
}

// Cleanup removes what Build made.
func Cleanup() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}
