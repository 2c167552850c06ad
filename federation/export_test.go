package federation

// Frame and Digest let the tests send a call by hand, as an attacker
// replaying one would.
var (
	Frame  = frame
	Digest = digest
)
