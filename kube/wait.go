package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// probeInterval is how often a wait tries to reach the agent once it can
// be probed.
const probeInterval = 100 * time.Millisecond

// agentWait is one wait for an agent to listen: a watch of the pod that
// says how the agent fares (to fail fast when it cannot run), and,
// meanwhile, port-forward probes that find the agent listening. waitReady
// (the pod of the agent's Job) and waitEphemeral (a container added to the
// target's pod) differ only in what they watch and how they read a pod.
type agentWait struct {
	pods typedcorev1.PodInterface
	opts metav1.ListOptions
	// watching names what is watched, and reached, for errors: "the
	// agent pod (job ns/name)".
	watching, reaching string
	timedOut           func() error
	log                *slog.Logger
	// pod reads one pod of the watch: an error ends the wait; probe says
	// the agent can be probed (Agent.dialer is set), running that its
	// container runs (then a refused SPDY upgrade means more than "not
	// yet", and WebSocket is tried too).
	pod func(ev watch.EventType, p *corev1.Pod) (probe, running bool, err error)
	// events, when not nil, are more events to watch, each read by event.
	events <-chan watch.Event
	event  func(watch.Event) error
}

// await runs w until a probe reaches the agent (nil: Agent.dialer keeps
// that connection), the watch says the agent cannot run, or ctx ends.
// Probing starts at once when Agent.dialer is set already. (w's hooks may
// change it, reaching for one, as they learn the pod.)
func (a *Agent) await(ctx context.Context, w *agentWait) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watcher, err := w.pods.Watch(ctx, w.opts)
	if err != nil {
		if ctx.Err() != nil {
			return w.timedOut()
		}
		return fmt.Errorf("watch %s: %w", w.watching, err)
	}
	defer func() { watcher.Stop() }()

	type probeResult struct {
		conn io.ReadWriteCloser
		err  error
	}
	results := make(chan probeResult, 1)
	started, probing, running := false, false, false
	next := time.NewTimer(0)
	next.Stop()
	defer next.Stop()
	probe := func() {
		started, probing = true, true
		allowWS := running
		go func() {
			conn, err := a.dialer.probe(ctx, allowWS)
			results <- probeResult{conn, err}
		}()
	}
	defer func() {
		// A probe still under way is not needed any more.
		cancel()
		if probing {
			if r := <-results; r.conn != nil {
				r.conn.Close()
			}
		}
	}()
	if a.dialer != nil {
		probe()
	}
	for {
		select {
		case ev, ok := <-watcher.ResultChan():
			if !ok {
				if ctx.Err() != nil {
					return w.timedOut()
				}
				// The API server ends watches now and then.
				if watcher, err = w.pods.Watch(ctx, w.opts); err != nil {
					return fmt.Errorf("watch %s: %w", w.watching, err)
				}
				continue
			}
			p, isPod := ev.Object.(*corev1.Pod)
			if !isPod {
				continue
			}
			canProbe, isRunning, err := w.pod(ev.Type, p)
			if err != nil {
				return err
			}
			running = running || isRunning
			if canProbe && !started {
				probe()
			}
		case ev, ok := <-w.events:
			if !ok {
				w.events = nil
				continue
			}
			if err := w.event(ev); err != nil {
				return err
			}
		case r := <-results:
			probing = false
			if r.err == nil {
				a.dialer.keep(r.conn)
				return nil
			}
			if refused(r.err) {
				return fmt.Errorf("port-forward to %s: %w", w.reaching, r.err)
			}
			w.log.Debug("agent not reachable yet", "err", r.err)
			next.Reset(probeInterval)
		case <-next.C:
			probe()
		case <-ctx.Done():
			return w.timedOut()
		}
	}
}
