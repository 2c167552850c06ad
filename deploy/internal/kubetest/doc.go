// Package kubetest starts a real Kubernetes control plane on loopback for
// the chart tests: Debian's etcd, and kube-apiserver (optionally also
// kube-controller-manager and kube-scheduler) built from the module proxy at
// the version deploy/kube/go.mod pins; and a node (StartNode): a kubelet of
// the same version with Debian's containerd, runc and CNI plugins, in a
// network and mount namespace of its own (decision 0097).
//
// Building those binaries takes a quarter of an hour of two cores, so they
// are built once per version and kept in a cache directory outside the
// repository (Binaries): $CLOISTER_KUBE_CACHE, else
// $XDG_CACHE_HOME/cloister/kube, else ~/.cache/cloister/kube, in a
// sub-directory named after the Kubernetes version and a hash of everything
// that goes into the build (deploy/kube's go.mod, go.sum and sources, and
// the Go release).
//
// Every control-plane process listens on 127.0.0.1 only, on ports below
// the kernel's ephemeral range; a node's containerd, kubelet and pods
// listen only inside the node's own network namespace. Every process is
// stopped (by its own process id) when the test ends. It is for tests; nothing here is meant for a real cluster.
package kubetest
