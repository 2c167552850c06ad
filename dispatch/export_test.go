package dispatch

// VouchForAll makes d a lying dispatcher for tests: it assigns the best
// ranked candidate whether or not its verified claims satisfy the
// requirement, as a dispatcher in a provider's pay would.
func VouchForAll(d *Dispatcher) { d.vouchAll = true }
