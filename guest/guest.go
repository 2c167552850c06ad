package guest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// RootEnv names the environment variable that relocates /input and /output
// to $CLOISTER_GUEST_ROOT/input and $CLOISTER_GUEST_ROOT/output. Inside an
// isolate it is normally unset; natively it is required, so that a program
// never reads or writes the host's real /input or /output by accident.
const RootEnv = "CLOISTER_GUEST_ROOT"

// MaxNameLen is the longest input or output name accepted, in bytes; it is
// the usual file-name limit of host file systems.
const MaxNameLen = 255

// ErrBadName is returned (wrapped) for an input or output name that is not a
// single plain file name.
var ErrBadName = errors.New("invalid name")

// ErrNoRoot is returned (wrapped) by every function when the program runs
// natively (not under wasip1) and CLOISTER_GUEST_ROOT is unset.
var ErrNoRoot = errors.New(RootEnv + " is not set (required outside WebAssembly)")

// ValidateName reports whether name can be used as an input or output name:
// a single, non-empty file name of at most MaxNameLen bytes, not "." or "..",
// without '/', '\\' or NUL. These are the names the runtime accepts too, so a
// name that passes here never escapes /input or /output.
func ValidateName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrBadName, len(name), MaxNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("%w: %q", ErrBadName, name)
	case strings.ContainsAny(name, "/\\\x00"):
		return fmt.Errorf("%w: %q contains '/', '\\' or NUL", ErrBadName, name)
	}
	return nil
}

// root returns the directory that holds input/ and output/.
func root() (string, error) {
	if r := os.Getenv(RootEnv); r != "" {
		return r, nil
	}
	if runtime.GOOS == "wasip1" {
		return "/", nil
	}
	return "", ErrNoRoot
}

// InputDir returns the directory the inputs are in: /input inside an
// isolate, $CLOISTER_GUEST_ROOT/input natively.
func InputDir() (string, error) {
	r, err := root()
	if err != nil {
		return "", err
	}
	return filepath.Join(r, "input"), nil
}

// OutputDir returns the directory outputs go to: /output inside an isolate,
// $CLOISTER_GUEST_ROOT/output natively.
func OutputDir() (string, error) {
	r, err := root()
	if err != nil {
		return "", err
	}
	return filepath.Join(r, "output"), nil
}

// InputPath returns the path of input name after validating the name.
func InputPath(name string) (string, error) {
	return path(InputDir, "input", name)
}

// OutputPath returns the path of output name after validating the name.
func OutputPath(name string) (string, error) {
	return path(OutputDir, "output", name)
}

func path(dir func() (string, error), kind, name string) (string, error) {
	if err := ValidateName(name); err != nil {
		return "", fmt.Errorf("%s %q: %w", kind, name, err)
	}
	d, err := dir()
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", kind, name, err)
	}
	return filepath.Join(d, name), nil
}

// ReadInput returns the whole content of input name. For inputs too large to
// hold in memory at once, use OpenInput and stream.
func ReadInput(name string) ([]byte, error) {
	p, err := InputPath(name)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("input %q: %w", name, err)
	}
	return b, nil
}

// OpenInput opens input name for reading. The caller closes the file.
func OpenInput(name string) (*os.File, error) {
	p, err := InputPath(name)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("input %q: %w", name, err)
	}
	return f, nil
}

// Inputs lists the names of the inputs the program was given, sorted. Only
// regular files are listed (the runtime provides nothing else).
func Inputs() ([]string, error) {
	d, err := InputDir()
	if err != nil {
		return nil, fmt.Errorf("listing inputs: %w", err)
	}
	entries, err := os.ReadDir(d)
	if err != nil {
		return nil, fmt.Errorf("listing inputs: %w", err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		if e.Type().IsRegular() {
			names = append(names, e.Name())
		}
	}
	return names, nil // os.ReadDir sorts by name
}

// WriteOutput writes data as output name, replacing any earlier output of
// that name. Outputs count against the run's output limits (total bytes and
// number of files); a write beyond them fails with an error, and the file
// may then hold a prefix of data: a program should treat the error as fatal
// (Fail), so that the run's non-zero exit tells the readers not to trust
// its outputs. (Writing a temporary file and renaming it would cost a second
// file against the limit and hide nothing: the readers see the exit status.)
func WriteOutput(name string, data []byte) error {
	f, err := CreateOutput(name)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("output %q: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("output %q: %w", name, err)
	}
	return nil
}

// CreateOutput creates (or truncates) output name for writing. The caller
// must Close the file and check the error: a write refused at the output
// limit may only be reported there.
func CreateOutput(name string) (*os.File, error) {
	p, err := OutputPath(name)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("output %q: %w", name, err)
	}
	return f, nil
}

// ReadJSON decodes input name, which must hold exactly one JSON value, into
// v. Fields of the input that v has no place for are an error, so that a
// misspelt field is not silently ignored.
func ReadJSON(name string, v any) error {
	b, err := ReadInput(name)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("input %q: invalid JSON: %w", name, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("input %q: invalid JSON: data after the first value", name)
	}
	return nil
}

// WriteJSON encodes v as indented JSON, followed by a newline, into output
// name.
func WriteJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("output %q: encoding JSON: %w", name, err)
	}
	return WriteOutput(name, append(b, '\n'))
}

// exit is os.Exit, replaced in tests.
var exit = os.Exit

// Fail writes the formatted message and a newline to stderr and ends the
// program with exit status 1. The runtime reports it as an "exited" outcome
// with exit code 1 and keeps stderr for the parties to read.
func Fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	io.WriteString(os.Stderr, msg)
	exit(1)
}
