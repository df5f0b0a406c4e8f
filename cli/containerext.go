package cli

import (
	"context"
	"encoding/json"

	"github.com/mirrord-go/mirrord/session"
)

// ContainerExtCmd is `mirrord container-ext`, which the IntelliJ plugin
// runs before it starts a run configuration in a Docker container: it
// starts a session that outlives the command (the agent, and a sidecar
// container running the internal proxy) and prints the options that put
// the container into it, {runtime, extra_args, uses_operator}. IntelliJ
// keeps the image's entrypoint and command, so only the preload library
// reaches the program: a dynamically linked one (see container.StartExt).
type ContainerExtCmd struct {
	ConfigFlags
	TargetFlags

	// Serve is the detached process that holds the session; container-ext
	// starts it and relays its output.
	Serve bool `name:"serve-session" hidden:""`
}

func (c *ContainerExtCmd) Run(ctx context.Context, env *Env) error {
	if err := session.CheckRun(); err != nil {
		return err
	}
	if c.Serve {
		return c.serve(ctx, env)
	}
	return startDetached(env, "container-ext", containerExtReady)
}

// containerExtReady reports whether a line of container-ext's output says
// that the session is ready: the root task's successful FinishedTask
// (MIRRORD_PROGRESS_MODE=json), or the plain answer otherwise.
func containerExtReady(line []byte) bool {
	if extReady(line) {
		return true
	}
	var m struct {
		Runtime   *string  `json:"runtime"`
		ExtraArgs []string `json:"extra_args"`
	}
	return json.Unmarshal(line, &m) == nil && m.Runtime != nil && m.ExtraArgs != nil
}
