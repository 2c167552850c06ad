package isolate

import (
	"context"
	"fmt"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// The guest is told ENOSPC when /output/ has no bytes left and EDQUOT when
// it holds MaxOutputFiles files. wazero v1.12's file-system interface has
// no such errno (anything outside its set reaches the guest as EIO), so the
// file system refuses with EIO and records which limit refused; the WASI
// functions that can reach a limit are wrapped, and the wrapper turns that
// EIO into the right errno. Every other function is wazero's own.

// WASI preview-1 errno values.
const (
	wasiErrnoDquot = 19
	wasiErrnoIO    = 29
	wasiErrnoNospc = 51
)

// limitedFunctions are the WASI functions that can run into an output
// limit: creating a file, writing, and growing a file.
var limitedFunctions = []string{"path_open", "fd_write", "fd_pwrite", "fd_filestat_set_size", "fd_allocate"}

// wasiOriginals holds wazero's implementations of limitedFunctions and their
// signatures, taken once from a compiled copy of its WASI host module.
var wasiOriginals = sync.OnceValues(func() (map[string]api.FunctionDefinition, error) {
	ctx := context.Background()
	// The interpreter compiles a host module without generating code.
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter())
	defer rt.Close(ctx)
	b := rt.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	cm, err := b.Compile(ctx)
	if err != nil {
		return nil, err
	}
	defs := cm.ExportedFunctions()
	out := map[string]api.FunctionDefinition{}
	for _, name := range limitedFunctions {
		d, ok := defs[name]
		if !ok {
			return nil, fmt.Errorf("wazero's WASI module has no %s", name)
		}
		if _, ok := d.GoFunction().(api.GoModuleFunction); !ok {
			return nil, fmt.Errorf("wazero's WASI %s is a %T, not a GoModuleFunction", name, d.GoFunction())
		}
		out[name] = d
	}
	return out, nil
})

// guestFSKey carries the run's *guestFS in the context the guest runs with.
type guestFSKey struct{}

// instantiateWASI instantiates WASI preview 1 in rt with the limit-aware
// wrappers.
func instantiateWASI(ctx context.Context, rt wazero.Runtime) error {
	origs, err := wasiOriginals()
	if err != nil {
		return err
	}
	b := rt.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	wasi_snapshot_preview1.NewFunctionExporter().ExportFunctions(b)
	for _, name := range limitedFunctions {
		d := origs[name]
		orig := d.GoFunction().(api.GoModuleFunction)
		b.NewFunctionBuilder().
			WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
				g, _ := ctx.Value(guestFSKey{}).(*guestFS)
				if g == nil {
					orig.Call(ctx, mod, stack)
					return
				}
				g.takeRefusal() // a refusal recorded earlier is not this call's
				orig.Call(ctx, mod, stack)
				if r := g.takeRefusal(); r != refusedNone && uint32(stack[0]) == wasiErrnoIO {
					stack[0] = uint64(r.errno())
				}
			}), d.ParamTypes(), d.ResultTypes()).
			WithParameterNames(d.ParamNames()...).
			WithResultNames(d.ResultNames()...).
			Export(name)
	}
	_, err = b.Instantiate(ctx)
	return err
}
