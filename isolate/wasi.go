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
	wasiErrnoMfile = 33
	wasiErrnoNospc = 51
)

// limitedFunctions are the WASI functions that can run into an output
// limit: creating a file, writing, and growing a file.
var limitedFunctions = []string{"path_open", "fd_write", "fd_pwrite", "fd_filestat_set_size", "fd_allocate"}

// wasiDefinitions holds wazero's WASI preview-1 functions by name, taken
// once per process from a compiled copy of its host module.
var wasiDefinitions = sync.OnceValues(func() (map[string]api.FunctionDefinition, error) {
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
	for _, name := range limitedFunctions {
		d, ok := defs[name]
		if !ok {
			return nil, fmt.Errorf("wazero's WASI module has no %s", name)
		}
		if _, ok := d.GoFunction().(api.GoModuleFunction); !ok {
			return nil, fmt.Errorf("wazero's WASI %s is a %T, not a GoModuleFunction", name, d.GoFunction())
		}
	}
	return defs, nil
})

// guestFSKey carries the run's *guestFS in the context the guest runs with.
type guestFSKey struct{}

// instantiateWASI instantiates in rt a WASI preview-1 host module with the
// functions in names (those the guest imports: checkImports has made sure
// they exist), the ones that can reach an output limit wrapped as above.
// The compiler generates a trampoline per host function, so exporting only
// what the guest uses makes every run cheaper.
func instantiateWASI(ctx context.Context, rt wazero.Runtime, names []string) error {
	defs, err := wasiDefinitions()
	if err != nil {
		return err
	}
	limited := map[string]bool{}
	for _, n := range limitedFunctions {
		limited[n] = true
	}
	b := rt.NewHostModuleBuilder(wasi_snapshot_preview1.ModuleName)
	seen := map[string]bool{}
	for _, name := range names {
		d, ok := defs[name]
		if !ok || seen[name] {
			continue
		}
		seen[name] = true
		fb := b.NewFunctionBuilder()
		switch fn := d.GoFunction().(type) {
		case api.GoModuleFunction:
			if limited[name] {
				fn = limitAware(fn)
			}
			fb = fb.WithGoModuleFunction(fn, d.ParamTypes(), d.ResultTypes())
		case api.GoFunction:
			fb = fb.WithGoFunction(fn, d.ParamTypes(), d.ResultTypes())
		default:
			return fmt.Errorf("wazero's WASI %s is a %T", name, d.GoFunction())
		}
		fb.WithParameterNames(d.ParamNames()...).WithResultNames(d.ResultNames()...).Export(name)
	}
	_, err = b.Instantiate(ctx)
	return err
}

// limitAware turns the EIO of a refusal by the guest file system into the
// errno of the limit that refused.
func limitAware(orig api.GoModuleFunction) api.GoModuleFunction {
	return api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
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
	})
}
