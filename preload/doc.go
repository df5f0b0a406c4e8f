// Package preload embeds the small C library that mirrord
// injects with LD_PRELOAD into dynamically linked programs (csrc/layer.c), to redirect
// their libc network, DNS, file and hostname calls to the internal proxy
// (the server side is intproxy.ServeLayer).
//
// The library is C, not Go: a Go c-shared library deadlocked in forked
// children and cost ~1 ms per exec when we measured it; the C one costs
// tens of microseconds. It is built by `make build` (plain gcc, no runtime
// dependency beyond glibc) and embedded in the binary; Library writes it to
// the user cache directory under a name derived from its content, once.
package preload
