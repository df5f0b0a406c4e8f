// Package goshim runs binaries that LD_PRELOAD cannot reach (Go programs and
// other static binaries) inside private user, network and mount namespaces
// whose network is served by package netstack, and catches the file and
// socket syscalls no packet shows with seccomp user notification.
//
// Not built yet.
package goshim
