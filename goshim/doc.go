// Package goshim runs a program inside private user, network, mount and
// UTS namespaces whose only network is a TUN device, and hands the TUN
// file descriptor to the mirrord process, which serves it with package
// netstack. The program and all its children see the target's network
// without any hook in the program: this is how Go and other static binaries
// (which LD_PRELOAD cannot reach) are run, and for now every binary.
//
// The mirrord process is multi-threaded and so cannot enter a new user
// namespace itself. Start re-executes the mirrord binary as a small helper
// (the hidden "goshim-helper" command, see HelperMain) created directly in
// the new namespaces; the helper sets up the device, addresses, routes and
// bind mounts, passes the TUN fd back over a socketpair, waits for the go
// signal and then execs the user's program in place, so the program is the
// direct child of mirrord: exit status and signals need no relay process.
package goshim
