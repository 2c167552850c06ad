package policy

import "github.com/cloisterhq/cloister/isolate/bytesize"

// ParseSize reads a byte size: a non-negative decimal integer with an
// optional unit, "B", "KiB", "MiB", "GiB", "TiB" (powers of 1024) or "kB",
// "KB", "MB", "GB", "TB" (powers of 1000), with no space before the unit
// ("256MiB", "1048576", "16MB"). It is bytesize.Parse, the parser the
// isolate's command-line flags use too.
func ParseSize(s string) (int64, error) {
	return bytesize.Parse(s)
}
