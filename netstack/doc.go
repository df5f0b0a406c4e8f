// Package netstack serves the network of a goshim sandbox: a gVisor
// userspace TCP/IP stack reads the sandbox's TUN device, accepts
// connections to every destination (promiscuous mode with spoofing), and
// hands each TCP connection, UDP flow and DNS query to a Handler (the
// internal proxy), which sends it to the target or to the local network.
//
// The stack is tuned for throughput the way tailscale tunes its own: large
// MTU (65520 on the TUN), SACK, and large TCP buffers. On a 2-core VM this
// gives roughly 10x the throughput of MTU 1500.
package netstack
