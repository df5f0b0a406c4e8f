//go:build !linux

package cli

import "github.com/mirrord-go/mirrord/session"

// ContainerCmd is `mirrord container`: it mounts this (static Linux)
// binary into the container and runs the program there with Linux's
// engines, so it needs Linux for now (session.CheckRun).
type ContainerCmd struct {
	Args []string `arg:"" optional:"" passthrough:"" help:"The container runtime's run command (Linux only for now)."`
}

func (ContainerCmd) Run() error { return session.CheckRun() }

// ContainerInitCmd runs in the container, as the Linux build.
type ContainerInitCmd struct {
	Args []string `arg:"" optional:"" passthrough:""`
}

func (ContainerInitCmd) Run() error { return session.CheckRun() }
