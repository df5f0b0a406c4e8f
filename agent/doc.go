// Package agent is the part of mirrord that runs in the cluster, next to the
// target pod: it is the hidden `mirrord agent` subcommand of the same binary.
// It dials outgoing traffic and answers DNS from the target's network
// namespace, mirrors or steals incoming traffic with nftables rules, and
// serves the target's files and environment from /proc/<pid>.
//
// Not built yet: the `mirrord agent` command reports that and exits.
package agent
