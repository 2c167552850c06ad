// Package atomicfile is the one way Cloister writes a whole file: through a
// temporary file in the same directory, fsynced, renamed (or linked) into
// place, and the directory fsynced, so that after the call returns the new
// content survives a crash, and at no crash point does a reader see a
// mixture of old and new or a half-written file.
//
// WriteFile writes bytes held in memory; Create streams content too large
// for that (a sealed program, a fetched blob) through the same steps, and
// CommitTo places a file whose name is known only at the end (a blob named
// by its hash).
//
// It is not for files that grow by appends (logs); those keep their own
// discipline and use SyncDir to make a new file's name durable.
// docs/decisions/0050-one-atomic-writer.md says why this is not
// github.com/google/renameio/v2 (which does not sync the directory).
package atomicfile
