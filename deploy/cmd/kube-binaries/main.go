// Command kube-binaries prints the directory holding the Kubernetes
// binaries the chart tests run (kube-apiserver, kube-controller-manager,
// kube-scheduler), building them into the cache first if they are
// not there. See package kubetest for where the cache lives.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/cloisterhq/cloister/deploy/internal/kubetest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := kubetest.Binaries(ctx, "kube", os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kube-binaries:", err)
		os.Exit(1)
	}
	fmt.Println(dir)
}
