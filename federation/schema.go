package federation

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// noLoader refuses every reference outside the schema itself: a published
// schema must never make a node fetch anything.
type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema reference %q: only references within the schema are allowed", url)
}

// compiled keeps the schemas compiled for calls, by the SHA-256 of their
// bytes: a holder answers many calls of the same few functions.
var compiled = struct {
	sync.Mutex
	m map[string]*jsonschema.Schema
}{m: map[string]*jsonschema.Schema{}}

// maxCompiled bounds the schemas kept compiled.
const maxCompiled = 1024

// compiledSchema is CompileSchema, remembered.
func compiledSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	k := digest(raw)
	compiled.Lock()
	s, ok := compiled.m[k]
	compiled.Unlock()
	if ok {
		return s, nil
	}
	s, err := CompileSchema(raw)
	if err != nil {
		return nil, err
	}
	compiled.Lock()
	if len(compiled.m) >= maxCompiled {
		clear(compiled.m)
	}
	compiled.m[k] = s
	compiled.Unlock()
	return s, nil
}

// CompileSchema compiles a published JSON Schema (draft 2020-12 unless it
// names another), with no remote or file references.
func CompileSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noLoader{})
	const loc = "urn:cloister:schema"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	s, err := c.Compile(loc)
	if err != nil {
		return nil, fmt.Errorf("schema: %w", err)
	}
	return s, nil
}

// ErrSchema: a value does not satisfy its published schema.
var ErrSchema = errors.New("does not satisfy the published schema")

// validate checks value (JSON) against s.
func validate(s *jsonschema.Schema, value []byte) error {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(value))
	if err != nil {
		return fmt.Errorf("%w: not JSON: %v", ErrSchema, err)
	}
	if err := s.Validate(v); err != nil {
		return fmt.Errorf("%w: %v", ErrSchema, err)
	}
	return nil
}
