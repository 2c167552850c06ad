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

var (
	wtOnce sync.Once
	wtDir  string
	wtPath string
	wtErr  error
)

// BuildWasmtime compiles cmd/cloister-isolate-wasmtime (the worker of the
// wasmtime engine: cgo, the cloister_wasmtime tag) into a temporary
// directory, once per process. The first build on a machine links the
// engine's static library (about a minute); later ones come from the
// build cache.
func BuildWasmtime() (string, error) {
	wtOnce.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		wtDir, err = os.MkdirTemp("", "cloister-isolate-wasmtime-")
		if err != nil {
			wtErr = err
			return
		}
		wtPath = filepath.Join(wtDir, "cloister-isolate-wasmtime")
		cmd := exec.Command(goTool, "build", "-tags", "cloister_wasmtime", "-o", wtPath, "github.com/cloisterhq/cloister/cmd/cloister-isolate-wasmtime")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			wtErr = fmt.Errorf("building cloister-isolate-wasmtime: %v\n%s", err, out)
		}
	})
	return wtPath, wtErr
}

// Cleanup removes what Build and BuildWasmtime made.
func Cleanup() {
	for _, d := range []string{dir, wtDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
}
