package guest

import "fmt"

// Host calls: a program asks the node that runs it for something by name
// (a host-accelerated primitive, a sub-model of a federated computation)
// and waits for the answer. The node decides which calls a program may
// make, from its policy's "host_calls"; requests and responses are
// bounded (1 MiB each by default), and a program calling faster than its
// node allows is slowed down, not failed. C and Rust programs use the same
// WebAssembly imports (module "cloister_host_v1"; guest/c/cloister_host.h
// and docs/guest.md).

// Errors of HostCall. (Constants of an error type rather than errors.New:
// they need no initialisation, so a program that makes no host call
// carries none of this code.)
var (
	// ErrNoHost: the program runs natively, where there is no host to ask.
	ErrNoHost error = callErr("guest: host calls exist only inside an isolate")
	// ErrCallNotAllowed: the policy does not allow this call (or the node
	// does not offer it).
	ErrCallNotAllowed error = callErr("guest: the host call is not allowed for this program")
	// ErrCallTooLarge: the request exceeds the call's limit.
	ErrCallTooLarge error = callErr("guest: the host call's request exceeds its limit")
)

type callErr string

func (e callErr) Error() string { return string(e) }

// CallError is a host call the host could not answer, with its reason.
type CallError struct {
	Call    string
	Message string
}

func (e *CallError) Error() string {
	return fmt.Sprintf("guest: host call %s failed: %s", e.Call, e.Message)
}

// Status codes of the cloister_host_v1 functions (the ABI).
const (
	statusOK          = 0
	statusShortBuffer = 1
	statusNotAllowed  = 2
	statusTooLarge    = 3
	statusFailed      = 4
	statusBadArgument = 5
	statusNoResponse  = 6
)

// callError turns a status other than OK into an error.
func callError(name string, status uint32, msg []byte) error {
	switch status {
	case statusNotAllowed:
		return fmt.Errorf("%w: %s", ErrCallNotAllowed, name)
	case statusTooLarge:
		return fmt.Errorf("%w: %s", ErrCallTooLarge, name)
	case statusFailed:
		return &CallError{Call: name, Message: string(msg)}
	}
	return fmt.Errorf("guest: host call %s: status %d", name, status)
}
