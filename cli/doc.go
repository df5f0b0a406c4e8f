// Package cli is the mirrord command line: one kong command struct per
// subcommand (exec, port-forward, ls, verify-config, config schema,
// agent-image push, container, and the hidden agent), each with a Run
// method. It turns flags into config overrides and hands the resolved config
// to the components.
package cli
