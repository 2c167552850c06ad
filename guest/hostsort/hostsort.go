// Package hostsort sorts slices of 64-bit integers on the host: inside a
// Cloister isolate the sort runs natively in the worker, on the guest's
// own memory (the host-primitive module cloister_accel_v1, functions
// sort_u64 and sort_i64), several times faster than the same sort
// compiled to WebAssembly; elsewhere it is package slices'. The result is
// the same either way: integers have one sorted order.
//
// A program that imports this package runs only in a runtime that offers
// cloister_accel_v1 (every Cloister engine does).
package hostsort
