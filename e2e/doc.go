// Package e2e holds the end-to-end tests that run mirrord against a real
// Kubernetes cluster on this machine. They are behind the "e2e" build tag:
//
//	make e2e          # brings the cluster up (e2e/cluster/up.sh), then runs them
//	go test -tags e2e ./e2e/...   # against a cluster `make e2e-cluster` started
//
// The tests find the cluster through E2E_KUBECONFIG and E2E_KUBECTL (set by
// `make e2e`), defaulting to ~/.cache/mirrord-e2e/kubeconfig and the kubectl
// the harness built. They only talk to loopback and to that cluster.
// See e2e/README.md.
package e2e
