// Package chart holds the tests of the Helm chart in deploy/helm/cloister:
// rendered with the Helm SDK for several value sets, every object decoded
// strictly into the Kubernetes API's Go types, and applied to a real
// kube-apiserver (server-side apply, dry run) started on loopback, with a
// controller manager and scheduler so that the workloads' pods are created
// and scheduled onto a registered node. Run them with ./deploy/test-k8s.
package chart
