//go:build !linux

package cli

import (
	"context"

	"github.com/mirrord-go/mirrord/session"
)

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

// ContainerSidecarCmd runs in container-ext's sidecar, as the Linux build.
type ContainerSidecarCmd struct {
	Args []string `arg:"" optional:"" passthrough:""`
}

func (ContainerSidecarCmd) Run() error { return session.CheckRun() }

func (c *ContainerExtCmd) serve(ctx context.Context, env *Env) error { return session.CheckRun() }
