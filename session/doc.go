// Package session is one mirrord session: the agent it reaches (one
// already running, a local one for a pid target, or an agent pod next to
// a Kubernetes target), the internal proxy connected to it, and what
// serves a program from it: the preload library's socket, the netstack
// sandbox, incoming traffic delivered to the program's ports on this
// machine, and the teardown that leaves nothing behind.
//
// The commands share it: exec runs one program and ends the session with
// it; ext leaves the session running for the programs an IDE starts with
// the environment it returns; layer-exec puts a Go or static child of a
// layered program into a sandbox of its parent's session; port-forward
// uses the proxy alone.
package session
