// Package addrfilter parses and matches the address filters of
// feature.network.outgoing.filter and feature.network.dns.filter:
// strings of the form [protocol://][name|address|subnet/mask][:port], such
// as "tcp://1.1.1.0/24:1337", "google.com", ":53" or "udp://[::1]:53".
//
// It is pure (no I/O, no name resolution) so that the CLI can validate a
// config with it and both local engines (preload and goshim, through the
// internal proxy) decide the same way where each connection goes.
package addrfilter
