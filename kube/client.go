package kube

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/klog/v2"

	"github.com/go-logr/logr"
)

func init() {
	// client-go logs through klog to stderr (e.g. every failed
	// port-forward attempt); the program's stderr is not ours to use.
	// mirrord reports what matters as errors instead.
	klog.LogToStderr(false)
	klog.SetOutput(io.Discard)
	klog.SetLogger(logr.Discard())
}

// Options says which cluster to talk to. Empty fields mean what kubectl
// would use: $KUBECONFIG or ~/.kube/config, and its current context.
type Options struct {
	Kubeconfig                string
	Context                   string
	AcceptInvalidCertificates *bool
	// Timeout bounds the reachability check. Zero means 8 seconds, so
	// that an unreachable cluster is reported well within 10 s.
	Timeout time.Duration
}

// Client is a checked connection to a cluster.
type Client struct {
	Config    *rest.Config
	Clientset kubernetes.Interface
	// Where tells the user which cluster this is: kubeconfig paths,
	// context and server.
	Where Where
	// Namespace is the context's default namespace.
	Namespace string
}

// Where records what was tried, for messages.
type Where struct {
	Kubeconfig string
	Context    string
	Server     string
}

func (w Where) String() string {
	s := fmt.Sprintf("kubeconfig %s, context %q", w.Kubeconfig, w.Context)
	if w.Server != "" {
		s += ", server " + w.Server
	}
	return s
}

// ExpandHome turns a leading "~/" into the user's home directory, as users
// write "kubeconfig": "~/.kube/config".
func ExpandHome(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, p[1:])
		}
	}
	return p
}

// Connect loads the kubeconfig and checks that the API server answers.
// Errors say which kubeconfig and context were tried and what to change.
func Connect(ctx context.Context, opts Options) (*Client, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	where := Where{}
	if opts.Kubeconfig != "" {
		rules.ExplicitPath = ExpandHome(opts.Kubeconfig)
		where.Kubeconfig = rules.ExplicitPath
		if _, err := os.Stat(rules.ExplicitPath); err != nil {
			return nil, fmt.Errorf("cannot use kubeconfig %s: %w (set --kubeconfig or \"kubeconfig\" in the config file)", rules.ExplicitPath, err)
		}
	} else {
		where.Kubeconfig = strings.Join(rules.GetLoadingPrecedence(), string(filepath.ListSeparator))
	}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: opts.Context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)

	raw, err := cc.RawConfig()
	if err != nil {
		return nil, fmt.Errorf("cannot load kubeconfig %s: %w (set --kubeconfig or \"kubeconfig\" in the config file)", where.Kubeconfig, err)
	}
	where.Context = raw.CurrentContext
	if opts.Context != "" {
		where.Context = opts.Context
	}
	if where.Context == "" || len(raw.Contexts) == 0 {
		return nil, fmt.Errorf("no Kubernetes cluster configured: tried kubeconfig %s and found no current context; point --kubeconfig or $KUBECONFIG at a kubeconfig, or pick one with --context", where.Kubeconfig)
	}
	kctx, ok := raw.Contexts[where.Context]
	if !ok {
		return nil, fmt.Errorf("context %q not found in kubeconfig %s (available: %s); fix --context or \"kube_context\"", where.Context, where.Kubeconfig, strings.Join(contextNames(raw), ", "))
	}
	if c, ok := raw.Clusters[kctx.Cluster]; ok {
		where.Server = c.Server
	}
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("invalid Kubernetes client configuration (%s): %w", where, err)
	}
	if opts.AcceptInvalidCertificates != nil && *opts.AcceptInvalidCertificates {
		cfg.Insecure = true
		cfg.CAData, cfg.CAFile = nil, ""
	}
	ns, _, err := cc.Namespace()
	if err != nil || ns == "" {
		ns = "default"
	}
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 8 * time.Second
	}
	probe := rest.CopyConfig(cfg)
	probe.Timeout = timeout
	cs, err := kubernetes.NewForConfig(probe)
	if err != nil {
		return nil, fmt.Errorf("cannot create a Kubernetes client (%s): %w", where, err)
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err := cs.Discovery().RESTClient().Get().AbsPath("/version").Do(pctx).Raw(); err != nil {
		reason := err.Error()
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(pctx.Err(), context.DeadlineExceeded) {
			reason = fmt.Sprintf("no answer within %s", timeout)
		}
		return nil, fmt.Errorf("cannot reach the Kubernetes cluster (%s): %s; is the cluster running and is this the right context? (set with --context or \"kube_context\")", where, reason)
	}
	full, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("cannot create a Kubernetes client (%s): %w", where, err)
	}
	return &Client{Config: cfg, Clientset: full, Where: where, Namespace: ns}, nil
}

func contextNames(c clientcmdapi.Config) []string {
	names := make([]string, 0, len(c.Contexts))
	for n := range c.Contexts {
		names = append(names, n)
	}
	if len(names) == 0 {
		return []string{"none"}
	}
	sort.Strings(names)
	return names
}
