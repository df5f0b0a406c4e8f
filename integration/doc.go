// Package integration holds the hermetic integration tests: the real
// mirrord binary and agent against a fake "pod" made of network namespaces
// on this machine (ip netns, veth), with no Kubernetes. They need root;
// test traffic only goes to loopback and to the namespaces the tests make.
package integration
