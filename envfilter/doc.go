// Package envfilter decides which environment the local process gets
// (feature.env): which of the target's variables are taken (include and
// exclude patterns, the default excludes), and how they are combined with
// an env file, mappings, overrides, unset names and the local environment.
//
// Everything here is a pure function of its inputs, so the CLI and the
// agent agree on the result and it is tested without a cluster.
package envfilter
