package cli

import (
	"context"

	"github.com/mirrord-go/mirrord/session"
)

// LayerExecCmd is what the preload library executes instead of a Go or
// static program that a layered process starts (see session.LayerExec).
type LayerExecCmd struct {
	Path string   `arg:"" help:"The program to run."`
	Args []string `arg:"" optional:"" passthrough:"" help:"Its argv, argv[0] included."`
}

func (c *LayerExecCmd) Run(ctx context.Context) error {
	return session.LayerExec(ctx, c.Path, c.Args)
}
