// Package container runs a local container (`docker run ...`, podman,
// nerdctl) in a session's context: the agent is started on this machine's
// side, and the mirrord binary, mounted into the container as its
// entrypoint, runs the container's program in the session.
package container
