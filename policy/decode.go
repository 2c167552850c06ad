package policy

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/cloisterhq/cloister/jcs"
)

// Parse reads a policy document: strict JSON (jcs.Parse), fields exactly as
// documented with the right types, then Validate. JSON that is not a valid
// policy yields a *ValidationError listing every problem; bytes that are not
// strict JSON yield an error wrapping ErrSyntax.
func Parse(data []byte) (*Policy, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%w: %d bytes, a policy is at most %d", ErrSyntax, len(data), MaxFileSize)
	}
	v, err := jcs.Parse(data)
	if err != nil {
		var dup *jcs.DuplicateKeyError
		if errors.As(err, &dup) {
			field := join(dup.Path, dup.Key)
			return nil, &ValidationError{Problems: []Problem{{Field: field, Message: fmt.Sprintf("appears twice (line %d); each field must appear once", dup.Line)}}}
		}
		return nil, fmt.Errorf("%w: %w", ErrSyntax, err)
	}
	p := &Policy{}
	d := &decoder{present: map[string]bool{}}
	d.decode(v, reflect.ValueOf(p).Elem(), "")
	if d.present["replicas"] && p.Replicas == 0 {
		d.probs.add("replicas", "must be at least 1 (omit it for 1)")
	}
	if !d.present["replicas"] {
		p.Replicas = 1
	}
	all := d.probs
	if verr := p.Validate(); verr != nil {
		for _, vp := range verr.(*ValidationError).Problems {
			if !d.covers(vp.Field) {
				all = append(all, vp)
			}
		}
	}
	if err := all.err(); err != nil {
		return nil, err
	}
	p.canonical = v.Canonical()
	return p, nil
}

// decoder fills Go values from a jcs.Value, recording a problem for each
// unknown field, missing required field and wrong type instead of stopping
// at the first.
type decoder struct {
	probs   problems
	present map[string]bool
	bad     []string // fields with a type or presence problem
}

func (d *decoder) fail(field, format string, args ...any) {
	if field == "" {
		field = "(document)"
	}
	d.probs.add(field, format, args...)
	d.bad = append(d.bad, field)
}

// covers reports whether a decoding problem already explains a problem
// Validate found on field (a missing "version" need not also be "must be 1").
func (d *decoder) covers(field string) bool {
	for _, b := range d.bad {
		if covered(field, b) {
			return true
		}
	}
	return false
}

// required lists, per struct type, the fields a document must spell out.
var required = map[reflect.Type][]string{
	reflect.TypeFor[Policy]():        {"version", "name", "principals", "programs", "outputs", "isolates", "expires"},
	reflect.TypeFor[Principal]():     {"id", "signing_key", "roles"},
	reflect.TypeFor[Program]():       {"name", "sha256"},
	reflect.TypeFor[SealedProgram](): {"digest", "owner", "stores", "brokers", "threshold"},
	reflect.TypeFor[SealedBroker]():  {"url", "key"},
	reflect.TypeFor[Input]():         {"name"},
	reflect.TypeFor[Source]():        {"digest", "stores"},
	reflect.TypeFor[Output]():        {"name", "readers"},
	reflect.TypeFor[Isolate]():       {"class"},
}

var timeType = reflect.TypeFor[time.Time]()

// join appends an object key to a field path. Keys that are not plain
// names (empty, spaces, dots, brackets…) are written quoted in brackets,
// so that every path names exactly one place.
func join(path, key string) string {
	plain := key != ""
	for _, c := range key {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			plain = false
			break
		}
	}
	if !plain {
		return path + "[" + strconv.Quote(key) + "]"
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

func article(k string) string {
	switch k {
	case "array", "object":
		return "an " + k
	}
	return "a " + k
}

func (d *decoder) wrongType(v *jcs.Value, path, want string) {
	d.fail(path, "expected %s, got %s", want, article(v.Kind.String()))
}

func (d *decoder) decode(v *jcs.Value, rv reflect.Value, path string) {
	t := rv.Type()
	if t == timeType {
		if v.Kind != jcs.String {
			d.wrongType(v, path, "an RFC 3339 time string")
			return
		}
		tm, err := time.Parse(time.RFC3339, v.Str)
		if err != nil {
			d.fail(path, "%q is not an RFC 3339 time such as 2027-01-01T00:00:00Z", v.Str)
			return
		}
		rv.Set(reflect.ValueOf(tm))
		return
	}
	switch t.Kind() {
	case reflect.String:
		if v.Kind != jcs.String {
			d.wrongType(v, path, "a string")
			return
		}
		rv.SetString(v.Str)
	case reflect.Bool:
		if v.Kind != jcs.Bool {
			d.wrongType(v, path, "true or false")
			return
		}
		rv.SetBool(v.Bool)
	case reflect.Int:
		n, ok := d.integer(v, path)
		if !ok {
			return
		}
		if n < math.MinInt32 || n > math.MaxInt32 {
			d.fail(path, "%s is out of range", v.Num)
			return
		}
		rv.SetInt(n)
	case reflect.Uint64:
		n, ok := d.integer(v, path)
		if !ok {
			return
		}
		if n < 0 {
			d.fail(path, "must not be negative")
			return
		}
		rv.SetUint(uint64(n))
	case reflect.Slice:
		if v.Kind != jcs.Array {
			d.wrongType(v, path, "an array")
			return
		}
		s := reflect.MakeSlice(t, len(v.Elems), len(v.Elems))
		for i, e := range v.Elems {
			d.decode(e, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
		rv.Set(s)
	case reflect.Map:
		if v.Kind != jcs.Object {
			d.wrongType(v, path, "an object")
			return
		}
		m := reflect.MakeMapWithSize(t, len(v.Members))
		for _, mem := range v.Members {
			ev := reflect.New(t.Elem()).Elem()
			d.decode(mem.Value, ev, join(path, mem.Key))
			m.SetMapIndex(reflect.ValueOf(mem.Key).Convert(t.Key()), ev)
		}
		rv.Set(m)
	case reflect.Struct:
		if v.Kind != jcs.Object {
			d.wrongType(v, path, "an object")
			return
		}
		fields := jsonFields(t)
		for _, mem := range v.Members {
			fp := join(path, mem.Key)
			idx, ok := fields[mem.Key]
			if !ok {
				msg := "unknown field"
				for name := range fields {
					if strings.EqualFold(name, mem.Key) || strings.EqualFold(strings.ReplaceAll(name, "_", ""), strings.ReplaceAll(strings.ReplaceAll(mem.Key, "-", ""), "_", "")) {
						msg += fmt.Sprintf(" (did you mean %q?)", name)
						break
					}
				}
				d.fail(fp, "%s", msg)
				continue
			}
			d.present[fp] = true
			d.decode(mem.Value, rv.Field(idx), fp)
		}
		for _, name := range required[t] {
			if v.Get(name) == nil {
				d.fail(join(path, name), "required field is missing")
			}
		}
	case reflect.Pointer:
		// An optional object (Input.From): present means set.
		ev := reflect.New(t.Elem())
		d.decode(v, ev.Elem(), path)
		rv.Set(ev)
	default:
		panic("policy: decoder has no case for " + t.String())
	}
}

const maxSafeInteger = 1<<53 - 1

// integer accepts only integer literals: 1, not 1.0 or 1e0, so that a
// number field has one spelling.
func (d *decoder) integer(v *jcs.Value, path string) (int64, bool) {
	if v.Kind != jcs.Number {
		d.wrongType(v, path, "an integer")
		return 0, false
	}
	n, err := strconv.ParseInt(v.Num, 10, 64)
	if err != nil {
		d.fail(path, "%s is not an integer in range (write whole numbers without a fraction or exponent)", v.Num)
		return 0, false
	}
	// RFC 8785 writes numbers as IEEE doubles: beyond 2^53 two different
	// integers could share a canonical form, and so a hash.
	if n > maxSafeInteger || n < -maxSafeInteger {
		d.fail(path, "%s is beyond ±(2^53-1), the largest integer the canonical form represents exactly", v.Num)
		return 0, false
	}
	return n, true
}

// jsonFields maps json tag names to field indexes.
func jsonFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		m[name] = i
	}
	return m
}
