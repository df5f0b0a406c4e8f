package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/mirrord-go/mirrord/agentimage"
	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/version"
)

// AgentImageCmd groups the agent image commands.
type AgentImageCmd struct {
	Push AgentImagePushCmd `cmd:"" help:"Build the agent image from this binary (it is its own agent) and push it to a registry, or write it as a tar (--tar) or load it into a kind cluster (--kind)."`
}

// AgentImagePushCmd is `mirrord agent-image push`.
type AgentImagePushCmd struct {
	Reference string   `arg:"" name:"reference" placeholder:"REGISTRY/REPO[:TAG]" help:"Where to push the image, e.g. registry.example.com/mirrord; the tag defaults to this build's version."`
	Binary    []string `name:"binary" sep:"none" type:"path" placeholder:"PATH" help:"A static Linux mirrord build to add (repeatable; e.g. bin/mirrord-linux-arm64 of make): several make a multi-platform image index. The running mirrord is in the image when it is a Linux build; on macOS, give the Linux builds here."`
	Insecure  bool     `name:"insecure" help:"The registry speaks plain HTTP."`
	Tar       string   `name:"tar" type:"path" placeholder:"FILE" help:"Write the image as a docker-archive tar instead of pushing (for docker load, ctr -n k8s.io images import, kind load image-archive). One platform only."`
	Kind      string   `name:"kind" placeholder:"CLUSTER" help:"Load the image into this kind cluster (kind load image-archive) instead of pushing. One platform only."`
}

// executable is the running binary; tests replace it.
var executable = os.Executable

// Run builds the image of the running binary (and the --binary ones) and
// pushes it, or writes it as a tar and loads it into kind. The reference
// goes to stdout; how to use it goes to stderr.
func (c *AgentImagePushCmd) Run(ctx context.Context, env *Env) error {
	ref, err := agentimage.ParseReference(c.Reference, version.Version, c.Insecure)
	if err != nil {
		return fmt.Errorf("agent-image push: reference %q: %w", c.Reference, err)
	}
	local := c.Tar != "" || c.Kind != ""
	if c.Kind != "" {
		if _, err := agentimage.KindPath(); err != nil {
			return fmt.Errorf("agent-image push: --kind %s: %w", c.Kind, err)
		}
	}
	self, err := executable()
	if err != nil {
		return fmt.Errorf("agent-image push: finding the running mirrord binary: %w", err)
	}
	// The running mirrord is the image's first binary when it is a Linux
	// build; a macOS one (or any other) builds the image of the --binary
	// builds alone.
	var bins []agentimage.Binary
	if selfBin, err := agentimage.ReadBinary(self); err == nil {
		bins = append(bins, selfBin)
	} else if len(c.Binary) == 0 {
		return fmt.Errorf("agent-image push: the running mirrord (%s) cannot be the agent: %w; give Linux builds of mirrord with --binary PATH", self, err)
	}
	if local && len(bins)+len(c.Binary) > 1 {
		flag := "--tar"
		if c.Tar == "" {
			flag = "--kind"
		}
		return fmt.Errorf("agent-image push: %s writes a docker-archive, which holds one platform: drop --binary, or push the multi-platform image to a registry", flag)
	}
	for _, p := range c.Binary {
		b, err := agentimage.ReadBinary(p)
		if err != nil {
			return fmt.Errorf("agent-image push: --binary %s: %w", p, err)
		}
		for _, o := range bins {
			if agentimage.PlatformString(o.Platform) == agentimage.PlatformString(b.Platform) {
				return fmt.Errorf("agent-image push: --binary %s is a %s build, as %s is: give builds for other architectures", p, agentimage.PlatformString(b.Platform), o.Path)
			}
		}
		bins = append(bins, b)
	}
	var platforms []string
	for _, b := range bins {
		platforms = append(platforms, agentimage.PlatformString(b.Platform))
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if local {
		return c.writeLocal(ctx, env, ref, bins[0])
	}
	fmt.Fprintf(env.Stderr, "mirrord: pushing the agent image (%s) to %s\n", strings.Join(platforms, ", "), ref.Name())
	digest, err := agentimage.Push(ctx, ref, bins)
	if err != nil {
		return fmt.Errorf("agent-image push: %s: %w", c.Reference, err)
	}
	pushed := ref.Name() + "@" + digest.String()
	fmt.Fprintln(env.Stdout, pushed)
	useHint(env, ref, pushed)
	return nil
}

// writeLocal writes the docker-archive (--tar), and loads it into kind
// (--kind).
func (c *AgentImagePushCmd) writeLocal(ctx context.Context, env *Env, ref name.Tag, b agentimage.Binary) error {
	path := c.Tar
	if path == "" {
		dir, err := os.MkdirTemp("", "mirrord-agent-image-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		path = filepath.Join(dir, "agent.tar")
	}
	id, err := agentimage.WriteTar(path, ref, b)
	if err != nil {
		if c.Tar != "" {
			return fmt.Errorf("agent-image push: --tar %s: %w", c.Tar, err)
		}
		return fmt.Errorf("agent-image push: writing the image for --kind: %w", err)
	}
	if c.Kind != "" {
		fmt.Fprintf(env.Stderr, "mirrord: loading the agent image %s (%s) into the kind cluster %s\n", ref.Name(), agentimage.PlatformString(b.Platform), c.Kind)
		if err := agentimage.KindLoad(ctx, c.Kind, path, env.Stderr); err != nil {
			return fmt.Errorf("agent-image push: --kind %s: %w", c.Kind, err)
		}
	} else {
		fmt.Fprintf(env.Stderr, "mirrord: wrote the agent image %s (%s, image ID %s) to %s; load it on each node with `ctr -n k8s.io images import %s`, or `docker load -i %s`, or `kind load image-archive %s`\n",
			ref.Name(), agentimage.PlatformString(b.Platform), id, c.Tar, c.Tar, c.Tar, c.Tar)
	}
	fmt.Fprintln(env.Stdout, ref.Name())
	useHint(env, ref, ref.Name())
	return nil
}

// useHint tells how to make sessions use the image, unless it is the one
// they use already.
func useHint(env *Env, ref name.Tag, use string) {
	if def, err := name.NewTag(config.DefaultAgentImage()); err == nil && def.Name() == ref.Name() {
		return
	}
	fmt.Fprintf(env.Stderr, "mirrord: to use it, set agent.image in the config ({\"agent\": {\"image\": %q}}) or pass --agent-image %s\n", use, use)
}
