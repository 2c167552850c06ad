// Package acl is the one form of the ledger entries that govern sealed
// artifacts and the release of their keys: an artifact registered by its
// owner, grants of its key to a specific isolate or to an isolate class,
// delegations of the right to grant, revocations, and the key releases
// brokers record. It holds the bodies' Go types, their one canonical
// encoding (Decode refuses any other spelling), the checks of their shape,
// the judgements that both the ledger's state machine and a broker make
// (a delegation's limits, a grantee's match), and the state the ledger
// answers about them.
//
// It is not the state machine (package ledger judges entries against the
// log's state and block time) and not a broker (package broker verifies
// evidence); it is what they share, so that a broker and the validators
// cannot disagree about what an entry says.
package acl
