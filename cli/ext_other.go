//go:build !linux

package cli

import (
	"context"

	"github.com/mirrord-go/mirrord/session"
)

// serve would serve the preload library of the programs the IDE starts:
// Linux only for now (session.CheckRun).
func (c *ExtCmd) serve(ctx context.Context, env *Env) error { return session.CheckRun() }
