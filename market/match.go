// Package market holds the marketplace's decisions that anyone must be
// able to recompute: which live offers satisfy a request's requirement,
// judged on claims the dispatcher verified itself, and how the candidates
// are ranked. Both are pure functions of their inputs (ledger state and
// the request); the dispatcher that calls them is not built yet (see
// docs/marketplace.md).
package market

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/interpreter"

	"github.com/cloisterhq/cloister/ledger/client"
)

// Requirement limits.
const (
	// MaxRequirementLen bounds a requirement's source text.
	MaxRequirementLen = 4096
	// maxCost bounds one evaluation's CEL cost, so that no expression
	// costs a dispatcher more than a few microseconds per offer.
	maxCost = 10_000
)

// Verified is what the dispatcher established about a candidate from
// evidence it fetched and verified itself: never copied from the offer.
type Verified struct {
	Class       string // isolate class the evidence proves
	Measurement string // lower-case hex
	Debug       bool   // the isolate runs with debugging enabled
}

// Requirement is a compiled requirement expression: CEL over the verified
// claims (class, measurement, debug) and the offer's capacity fields
// (memory, cores, concurrency, price, regions), with the constants KiB,
// MiB and GiB. Example:
//
//	class in ['sev-snp', 'tdx'] && memory >= 2 * GiB && price <= 0.001
type Requirement struct {
	src string
	prg cel.Program
}

var env = func() *cel.Env {
	e, err := cel.NewEnv(
		cel.Variable("class", cel.StringType),
		cel.Variable("measurement", cel.StringType),
		cel.Variable("debug", cel.BoolType),
		cel.Variable("memory", cel.IntType),
		cel.Variable("cores", cel.IntType),
		cel.Variable("concurrency", cel.IntType),
		cel.Variable("price", cel.DoubleType),
		cel.Variable("regions", cel.ListType(cel.StringType)),
		cel.Constant("KiB", cel.IntType, types.Int(1<<10)),
		cel.Constant("MiB", cel.IntType, types.Int(1<<20)),
		cel.Constant("GiB", cel.IntType, types.Int(1<<30)),
	)
	if err != nil {
		panic(err)
	}
	return e
}()

// Compile parses and type-checks a requirement; it must be a boolean
// expression over the names above.
func Compile(src string) (*Requirement, error) {
	if len(src) == 0 || len(src) > MaxRequirementLen {
		return nil, fmt.Errorf("requirement: want 1 to %d bytes, got %d", MaxRequirementLen, len(src))
	}
	ast, iss := env.Compile(src)
	if iss.Err() != nil {
		return nil, fmt.Errorf("requirement: %w", iss.Err())
	}
	if ast.OutputType() != cel.BoolType {
		return nil, fmt.Errorf("requirement: evaluates to %s, want bool", ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(maxCost))
	if err != nil {
		return nil, fmt.Errorf("requirement: %w", err)
	}
	return &Requirement{src: src, prg: prg}, nil
}

// String returns the requirement's source.
func (r *Requirement) String() string { return r.src }

// Satisfied reports whether an offer whose claims the dispatcher verified
// as v satisfies r. Class, measurement and debug come from v only; an
// offer that claims a class its evidence does not prove is judged on the
// proven one.
func (r *Requirement) Satisfied(o *client.Offer, v Verified) (bool, error) {
	price, err := Price(o)
	if err != nil {
		return false, err
	}
	regions := o.Regions
	if regions == nil {
		regions = []string{}
	}
	out, _, err := r.prg.Eval(&activation{o: o, v: v, price: price, regions: regions})
	if err != nil {
		return false, fmt.Errorf("requirement: %w", err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, errors.New("requirement: not a boolean")
	}
	return b, nil
}

// Price reads an offer's price per CPU-second; 0 when it names none.
func Price(o *client.Offer) (float64, error) {
	if o.Price == "" {
		return 0, nil
	}
	p, err := strconv.ParseFloat(o.Price, 64)
	if err != nil || p < 0 {
		return 0, fmt.Errorf("offer price %q: not a non-negative decimal", o.Price)
	}
	return p, nil
}

// activation binds the requirement's names to one offer and its verified
// claims without building a map per evaluation.
type activation struct {
	o       *client.Offer
	v       Verified
	price   float64
	regions []string
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "class":
		return a.v.Class, true
	case "measurement":
		return a.v.Measurement, true
	case "debug":
		return a.v.Debug, true
	case "memory":
		return int64(min(a.o.Memory, 1<<62)), true
	case "cores":
		return int64(min(a.o.Cores, 1<<62)), true
	case "concurrency":
		return int64(min(a.o.Concurrency, 1<<62)), true
	case "price":
		return a.price, true
	case "regions":
		return a.regions, true
	}
	return nil, false
}

func (a *activation) Parent() interpreter.Activation { return nil }
