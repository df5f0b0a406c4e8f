// Package agentimage builds the agent's container image from mirrord
// binaries and pushes it to a registry, or writes it as a docker-archive
// tar. The binary is its own agent (`mirrord agent`, see package agent), so
// the image is one layer: the static binary at /mirrord (and an empty /tmp),
// with /mirrord as its entrypoint. Each binary's platform comes from its ELF
// header, not from the machine that builds the image; several binaries (one
// per platform) make an OCI image index.
//
// The image is reproducible: fixed timestamps and owners, so the same
// binaries always give the same digest.
package agentimage
