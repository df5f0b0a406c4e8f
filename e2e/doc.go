// Package e2e holds the end-to-end tests that run mirrord against a real
// local Kubernetes cluster (kind). They are behind the "e2e" build tag.
//
// Not built yet.
package e2e
