package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// CopySelfCmd copies the running binary to Dest: the init container of a
// target copy puts mirrord where the copy's containers can run it.
type CopySelfCmd struct {
	Dest string `arg:"" help:"Where to copy the binary."`
}

func (c *CopySelfCmd) Run() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	if err := os.WriteFile(c.Dest, b, 0o755); err != nil {
		return fmt.Errorf("copy-self: %w", err)
	}
	return os.Chmod(c.Dest, 0o755)
}

// IdleCmd waits for SIGTERM or SIGINT: the command of a target copy's
// containers, which must run (for the agent to enter their namespaces)
// without doing the job's work.
type IdleCmd struct{}

func (IdleCmd) Run() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	return nil
}
