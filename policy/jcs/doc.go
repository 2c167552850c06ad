// Package jcs parses JSON strictly and writes it in the JSON
// Canonicalization Scheme of RFC 8785, so that a document's hash depends on
// what it says, not on whitespace, key order or escaping.
//
// Parse accepts I-JSON (RFC 7493) only: UTF-8 without invalid sequences or
// unpaired surrogate escapes, no duplicate object keys, finite numbers, one
// value and nothing after it. Those are exactly the documents whose canonical
// form is well defined. Canonicalization follows RFC 8785: object members
// sorted by their keys' UTF-16 code units, strings with the minimal escapes,
// numbers in ECMAScript's shortest round-trip form.
//
// It is for hashing and signing structured data (policies, ledger entries),
// not a general JSON library: decoding into Go types is left to the caller.
package jcs
