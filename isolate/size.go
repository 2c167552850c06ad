package isolate

import "github.com/cloisterhq/cloister/isolate/bytesize"

// ParseSize parses a byte count such as "64MiB", "1GiB", "512KiB", "10MB"
// or "1000" (bytes), as the command line's --memory and --max-output take
// it. It is bytesize.Parse, the parser policy limits use too; the result is
// at most math.MaxInt64.
func ParseSize(s string) (uint64, error) {
	n, err := bytesize.Parse(s)
	return uint64(n), err
}
