// Command build-image builds Cloister's OCI image from this repository
// without a container engine and writes it as an OCI image layout in a tar
// archive. The last line it prints is the image digest (sha256:…); the same
// commit gives the same digest.
//
//	go run ./cmd/build-image [--arch GOARCH] OUT.tar
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"

	"github.com/cloisterhq/cloister/deploy/internal/image"
)

func main() {
	arch := flag.String("arch", "", "GOARCH of the binaries (default: the toolchain's)")
	root := flag.String("root", "..", "the repository root")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: build-image [--arch GOARCH] [--root DIR] OUT.tar\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	out, err := filepath.Abs(flag.Arg(0))
	if err != nil {
		fatal(err)
	}
	rootAbs, err := filepath.Abs(*root)
	if err != nil {
		fatal(err)
	}
	src, err := image.DescribeSource(ctx, rootAbs)
	if err != nil {
		fatal(err)
	}
	res, err := image.Build(ctx, out, image.Options{Source: src, GOARCH: *arch, Log: os.Stderr})
	if err != nil {
		fatal(err)
	}
	keys := make([]string, 0, len(res.Labels))
	for k := range res.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("label %s=%s\n", k, res.Labels[k])
	}
	fmt.Printf("image %s\n", res.Ref)
	fmt.Println(res.Digest)
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "build-image:", err)
	os.Exit(1)
}
