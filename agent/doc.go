// Package agent is the part of mirrord that runs next to the target: the
// hidden `mirrord agent` subcommand of the same binary. It listens for the
// CLI's internal proxy (a yamux session per client, see package protocol)
// and does every remote operation inside the target's namespaces:
// outgoing TCP and UDP are dialed from the target's network namespace
// (setns on a locked OS thread), DNS queries go to the target's resolvers
// from there, and the environment comes from /proc/<pid>/environ.
//
// It exits when no client has been connected for its TTL.
package agent
