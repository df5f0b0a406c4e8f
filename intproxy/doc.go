// Package intproxy is the internal proxy: the one local hub between the
// program and the agent. It owns the agent connection and applies the
// user's feature.network and feature.env rules, so that every engine (the
// netstack sandbox now, the preload library later) routes connections, DNS
// queries and environment the same way.
package intproxy
