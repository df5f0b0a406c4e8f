// Package preload embeds the small C library that mirrord injects with
// LD_PRELOAD into dynamically linked programs to redirect their libc
// network, DNS, file and hostname calls to the internal proxy.
//
// Not built yet.
package preload
