// Package image builds Cloister's OCI image from the repository without a
// container engine and without a base image: the static binaries
// (cloister and cloister-isolate) go into one layer next to the few files
// a non-root process expects (/etc/passwd, /etc/group, a writable data
// directory owned by that user), and the result is written as an OCI image
// layout packed into one tar archive.
//
// The build is reproducible: the binaries are built with -trimpath and no
// build id, every file in the layer and in the archive carries the commit's
// time (SOURCE_DATE_EPOCH), and nothing else varies, so the same commit
// gives the same manifest digest on any machine with the same Go release.
//
// It is not a general image builder: it knows this repository's binaries
// and nothing else.
package image
