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
// It is the project's one canonical JSON: policies, ledger entries, result
// commitments and every other structure that is hashed or signed as JSON
// use it, so that two parties never disagree about which bytes a document
// has. It is not a general JSON library: decoding into Go types is left to
// the caller. testdata/ holds its known-answer vectors.
package jcs
