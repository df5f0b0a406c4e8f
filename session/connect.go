package session

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/kube"
	"github.com/mirrord-go/mirrord/protocol"
)

// clusterProbeTimeout bounds the check that the cluster answers, so that
// a wrong kubeconfig is reported in seconds, not after client-go's
// default of minutes.
const clusterProbeTimeout = 8 * time.Second

// Cluster connects to the cluster of cfg (kubeconfig, kube_context,
// accept_invalid_certificates) and checks that it answers.
func Cluster(ctx context.Context, cfg *config.Config) (*kube.Client, error) {
	opts := kube.Options{AcceptInvalidCertificates: cfg.AcceptInvalidCertificates, Timeout: clusterProbeTimeout}
	if cfg.Kubeconfig != nil {
		opts.Kubeconfig = *cfg.Kubeconfig
	}
	if cfg.KubeContext != nil {
		opts.Context = *cfg.KubeContext
	}
	return kube.Connect(ctx, opts)
}

// givenAgentWait is how long a connection to an agent the user named
// (--agent-addr, connect_tcp) is retried: long enough for one started a
// moment before, short enough that a wrong address is reported at once
// rather than after agent.startup_timeout.
const givenAgentWait = 3 * time.Second

// connectRetry connects to an agent that may still be starting to listen.
func connectRetry(ctx context.Context, a *agentConn, cfg *config.Config, log *slog.Logger) (*intproxy.Proxy, error) {
	// The agent pod runs before the agent listens; on a busy node that
	// can take a while, so wait as long as agent.startup_timeout allows.
	start := time.Now()
	deadline := start.Add(max(15*time.Second, time.Duration(cfg.Agent.StartupTimeout)*time.Second))
	if a.named != "" {
		deadline = start.Add(givenAgentWait)
	}
	for attempt := 1; ; attempt++ {
		p, err := intproxy.Connect(ctx, a.addr, cfg, log, a.opts...)
		if err == nil {
			log.Debug("agent handshake", "addr", a.addr, "attempts", attempt, "took", time.Since(start))
			return p, nil
		}
		// A refused or reset connection means the agent is still coming
		// up behind the port-forward; an answer that says no is final.
		var pe *protocol.ErrorReply
		if errors.As(err, &pe) || strings.Contains(err.Error(), "version mismatch") || time.Now().After(deadline) || ctx.Err() != nil {
			if a.named != "" && pe == nil {
				return nil, fmt.Errorf("%w (the address is %s's; start an agent there with `mirrord agent`)", err, a.named)
			}
			return nil, fmt.Errorf("connect to the agent: %w", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
