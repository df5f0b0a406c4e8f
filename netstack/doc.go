// Package netstack serves the network of a goshim sandbox: a gVisor
// userspace TCP/IP stack reads the sandbox's TUN device and hands every
// TCP/UDP flow to the internal proxy, which sends it to the cluster or to
// the local network according to feature.network.outgoing.
//
// Not built yet.
package netstack
