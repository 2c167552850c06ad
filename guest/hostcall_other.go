//go:build !wasip1

package guest

// HostCall asks the host to answer the call name with req. Outside an
// isolate there is no host: it returns ErrNoHost.
func HostCall(name string, req []byte) ([]byte, error) {
	return nil, ErrNoHost
}
