package policy

import (
	"errors"
	"fmt"
	"strings"
)

// ErrSyntax marks a document that is not strict JSON at all (as opposed to
// JSON that breaks the policy rules, reported as *ValidationError).
var ErrSyntax = errors.New("not a strict JSON document")

// Problem is one broken rule, named by the field path it concerns
// ("principals[1].signing_key", "limits.memory"; "(document)" for the
// whole).
type Problem struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (p Problem) String() string { return p.Field + ": " + p.Message }

// ValidationError lists every problem found in a policy.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b strings.Builder
	if len(e.Problems) == 1 {
		b.WriteString("invalid policy: ")
		b.WriteString(e.Problems[0].String())
		return b.String()
	}
	fmt.Fprintf(&b, "invalid policy: %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// problems accumulates Problems.
type problems []Problem

func (ps *problems) add(field, format string, args ...any) {
	*ps = append(*ps, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// covered reports whether field is path or lies under path.
func covered(field, path string) bool {
	if path == "" || field == path {
		return true
	}
	return strings.HasPrefix(field, path) && (field[len(path)] == '.' || field[len(path)] == '[')
}
