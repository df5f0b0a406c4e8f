// Package kube talks to the Kubernetes API with client-go: it loads the
// kubeconfig the way kubectl does, checks that the cluster answers, and
// (later) resolves targets and runs the agent.
package kube
