package jcs

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Kind is the JSON type of a Value.
type Kind uint8

// JSON value kinds.
const (
	Null Kind = iota
	Bool
	Number
	String
	Array
	Object
)

func (k Kind) String() string {
	switch k {
	case Null:
		return "null"
	case Bool:
		return "boolean"
	case Number:
		return "number"
	case String:
		return "string"
	case Array:
		return "array"
	case Object:
		return "object"
	}
	return "invalid"
}

// Value is one parsed JSON value. Objects keep their members in document
// order; Number keeps the literal as written.
type Value struct {
	Kind    Kind
	Bool    bool
	Str     string // decoded string, for String
	Num     string // the literal, for Number
	Elems   []*Value
	Members []Member
	Offset  int // byte offset of the value in the input
}

// Member is one object member.
type Member struct {
	Key   string
	Value *Value
}

// Get returns the value of member key, or nil.
func (v *Value) Get(key string) *Value {
	for _, m := range v.Members {
		if m.Key == key {
			return m.Value
		}
	}
	return nil
}

// Limits on what Parse accepts, so that hostile input costs bounded memory
// and stack.
const (
	MaxDepth = 64
	MaxSize  = 4 << 20
)

// ErrSyntax marks input that is not a strict JSON text.
var ErrSyntax = errors.New("not strict JSON")

// ErrDuplicateKey marks an object with the same key twice. Errors wrapping
// it are *DuplicateKeyError, which says where.
var ErrDuplicateKey = errors.New("duplicate object key")

// SyntaxError reports where the input stops being strict JSON.
type SyntaxError struct {
	Offset int // byte offset
	Line   int // 1-based line of Offset
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("line %d (byte %d): %s", e.Line, e.Offset, e.Msg)
}

// Unwrap makes errors.Is(err, ErrSyntax) true.
func (e *SyntaxError) Unwrap() error { return ErrSyntax }

// DuplicateKeyError names the object path and the key that appears twice.
type DuplicateKeyError struct {
	Path string // e.g. "principals[1]"; empty for the top level
	Key  string
	Line int
}

func (e *DuplicateKeyError) Error() string {
	where := e.Path
	if where == "" {
		where = "top level"
	}
	return fmt.Sprintf("line %d: key %q appears twice in %s", e.Line, e.Key, where)
}

// Unwrap makes errors.Is(err, ErrDuplicateKey) true.
func (e *DuplicateKeyError) Unwrap() error { return ErrDuplicateKey }

type parser struct {
	data []byte
	pos  int
}

// Parse parses one strict JSON text (see the package comment).
func Parse(data []byte) (*Value, error) {
	if len(data) > MaxSize {
		return nil, &SyntaxError{Offset: 0, Line: 1, Msg: fmt.Sprintf("document is %d bytes, at most %d accepted", len(data), MaxSize)}
	}
	if !utf8.Valid(data) {
		off := firstInvalidUTF8(data)
		return nil, &SyntaxError{Offset: off, Line: lineOf(data, off), Msg: "invalid UTF-8"}
	}
	p := &parser{data: data}
	if len(data) >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF {
		return nil, p.errf(0, "byte order mark not allowed")
	}
	p.skipSpace()
	v, err := p.value("", 0)
	if err != nil {
		return nil, err
	}
	p.skipSpace()
	if p.pos != len(p.data) {
		return nil, p.errf(p.pos, "data after the end of the JSON value")
	}
	return v, nil
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

func lineOf(data []byte, off int) int {
	if off > len(data) {
		off = len(data)
	}
	return strings.Count(string(data[:off]), "\n") + 1
}

func (p *parser) errf(off int, format string, args ...any) error {
	return &SyntaxError{Offset: off, Line: lineOf(p.data, off), Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) skipSpace() {
	for p.pos < len(p.data) {
		switch p.data[p.pos] {
		case ' ', '\t', '\n', '\r':
			p.pos++
		default:
			return
		}
	}
}

func (p *parser) value(path string, depth int) (*Value, error) {
	if depth > MaxDepth {
		return nil, p.errf(p.pos, "nested deeper than %d levels", MaxDepth)
	}
	if p.pos >= len(p.data) {
		return nil, p.errf(p.pos, "unexpected end of input")
	}
	start := p.pos
	switch c := p.data[p.pos]; {
	case c == '{':
		return p.object(path, depth)
	case c == '[':
		return p.array(path, depth)
	case c == '"':
		s, err := p.str()
		if err != nil {
			return nil, err
		}
		return &Value{Kind: String, Str: s, Offset: start}, nil
	case c == 't':
		return p.literal("true", &Value{Kind: Bool, Bool: true, Offset: start})
	case c == 'f':
		return p.literal("false", &Value{Kind: Bool, Offset: start})
	case c == 'n':
		return p.literal("null", &Value{Kind: Null, Offset: start})
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		return nil, p.errf(p.pos, "unexpected character %q", rune(c))
	}
}

func (p *parser) literal(word string, v *Value) (*Value, error) {
	if !strings.HasPrefix(string(p.data[p.pos:min(len(p.data), p.pos+len(word))]), word) {
		return nil, p.errf(p.pos, "invalid literal (expected %s)", word)
	}
	p.pos += len(word)
	return v, nil
}

func (p *parser) object(path string, depth int) (*Value, error) {
	v := &Value{Kind: Object, Offset: p.pos, Members: []Member{}}
	p.pos++ // {
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == '}' {
		p.pos++
		return v, nil
	}
	seen := map[string]bool{}
	for {
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != '"' {
			return nil, p.errf(p.pos, "expected a string key")
		}
		keyOff := p.pos
		key, err := p.str()
		if err != nil {
			return nil, err
		}
		if seen[key] {
			return nil, &DuplicateKeyError{Path: path, Key: key, Line: lineOf(p.data, keyOff)}
		}
		seen[key] = true
		p.skipSpace()
		if p.pos >= len(p.data) || p.data[p.pos] != ':' {
			return nil, p.errf(p.pos, "expected ':' after key %q", key)
		}
		p.pos++
		p.skipSpace()
		child := key
		if path != "" {
			child = path + "." + key
		}
		mv, err := p.value(child, depth+1)
		if err != nil {
			return nil, err
		}
		v.Members = append(v.Members, Member{Key: key, Value: mv})
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.errf(p.pos, "unexpected end of input in object")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case '}':
			p.pos++
			return v, nil
		default:
			return nil, p.errf(p.pos, "expected ',' or '}' in object")
		}
	}
}

func (p *parser) array(path string, depth int) (*Value, error) {
	v := &Value{Kind: Array, Offset: p.pos, Elems: []*Value{}}
	p.pos++ // [
	p.skipSpace()
	if p.pos < len(p.data) && p.data[p.pos] == ']' {
		p.pos++
		return v, nil
	}
	for i := 0; ; i++ {
		p.skipSpace()
		ev, err := p.value(fmt.Sprintf("%s[%d]", path, i), depth+1)
		if err != nil {
			return nil, err
		}
		v.Elems = append(v.Elems, ev)
		p.skipSpace()
		if p.pos >= len(p.data) {
			return nil, p.errf(p.pos, "unexpected end of input in array")
		}
		switch p.data[p.pos] {
		case ',':
			p.pos++
		case ']':
			p.pos++
			return v, nil
		default:
			return nil, p.errf(p.pos, "expected ',' or ']' in array")
		}
	}
}

func (p *parser) str() (string, error) {
	start := p.pos
	p.pos++ // opening quote
	var b strings.Builder
	for {
		if p.pos >= len(p.data) {
			return "", p.errf(start, "unterminated string")
		}
		c := p.data[p.pos]
		switch {
		case c == '"':
			p.pos++
			return b.String(), nil
		case c < 0x20:
			return "", p.errf(p.pos, "control character %#02x in string (must be escaped)", c)
		case c == '\\':
			if p.pos+1 >= len(p.data) {
				return "", p.errf(p.pos, "unterminated escape")
			}
			e := p.data[p.pos+1]
			p.pos += 2
			switch e {
			case '"', '\\', '/':
				b.WriteByte(e)
			case 'b':
				b.WriteByte('\b')
			case 'f':
				b.WriteByte('\f')
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'u':
				r, err := p.hex4()
				if err != nil {
					return "", err
				}
				if utf16.IsSurrogate(r) {
					if r >= 0xDC00 {
						return "", p.errf(p.pos-6, "unpaired low surrogate \\u%04x", r)
					}
					if p.pos+1 >= len(p.data) || p.data[p.pos] != '\\' || p.data[p.pos+1] != 'u' {
						return "", p.errf(p.pos-6, "unpaired high surrogate \\u%04x", r)
					}
					p.pos += 2
					r2, err := p.hex4()
					if err != nil {
						return "", err
					}
					if r2 < 0xDC00 || r2 > 0xDFFF {
						return "", p.errf(p.pos-6, "high surrogate \\u%04x not followed by a low surrogate", r)
					}
					r = utf16.DecodeRune(r, r2)
				}
				b.WriteRune(r)
			default:
				return "", p.errf(p.pos-2, "invalid escape \\%c", e)
			}
		default:
			// Valid UTF-8 was checked up front; copy the run of
			// plain bytes.
			end := p.pos
			for end < len(p.data) && p.data[end] != '"' && p.data[end] != '\\' && p.data[end] >= 0x20 {
				end++
			}
			b.Write(p.data[p.pos:end])
			p.pos = end
		}
	}
}

func (p *parser) hex4() (rune, error) {
	if p.pos+4 > len(p.data) {
		return 0, p.errf(p.pos, "truncated \\u escape")
	}
	var r rune
	for _, c := range p.data[p.pos : p.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, p.errf(p.pos, "invalid \\u escape")
		}
	}
	p.pos += 4
	return r, nil
}

func (p *parser) number() (*Value, error) {
	start := p.pos
	if p.data[p.pos] == '-' {
		p.pos++
	}
	digits := func() int {
		n := 0
		for p.pos < len(p.data) && p.data[p.pos] >= '0' && p.data[p.pos] <= '9' {
			p.pos++
			n++
		}
		return n
	}
	if p.pos < len(p.data) && p.data[p.pos] == '0' {
		p.pos++
	} else if digits() == 0 {
		return nil, p.errf(start, "invalid number")
	}
	if p.pos < len(p.data) && p.data[p.pos] == '.' {
		p.pos++
		if digits() == 0 {
			return nil, p.errf(start, "invalid number: no digits after '.'")
		}
	}
	if p.pos < len(p.data) && (p.data[p.pos] == 'e' || p.data[p.pos] == 'E') {
		p.pos++
		if p.pos < len(p.data) && (p.data[p.pos] == '+' || p.data[p.pos] == '-') {
			p.pos++
		}
		if digits() == 0 {
			return nil, p.errf(start, "invalid number: no digits in exponent")
		}
	}
	lit := string(p.data[start:p.pos])
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, p.errf(start, "number %s is out of range for a 64-bit float", lit)
	}
	return &Value{Kind: Number, Num: lit, Offset: start}, nil
}

// ObjectEnd returns the index just past the JSON object or array that
// starts at b[start], matching braces and brackets outside strings; -1 if
// it does not close within b. It does not validate: it is for finding
// where a value a fixed layout embeds ends, before Parse (or json.Valid)
// judges it.
func ObjectEnd(b []byte, start int) int {
	depth, inString := 0, false
	for i := start; i < len(b); i++ {
		c := b[i]
		switch {
		case inString:
			if c == '\\' {
				i++
			} else if c == '"' {
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
		case c == '}' || c == ']':
			if depth--; depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}
