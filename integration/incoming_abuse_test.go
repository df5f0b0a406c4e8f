package integration

import (
	"net"
	"os"
	"sync/atomic"
	"testing"

	"github.com/mirrord-go/mirrord/integration/abuse"
)

// The port the abuse tests steal with a filter.
const abusePort = "8900"

// TestIncomingAbuse runs the attacks of package abuse against a hermetic
// agent: the target's app in the fake pod, the clients in the svc
// namespace (e2e TestIncomingAbuse runs them against an agent pod).
func TestIncomingAbuse(t *testing.T) {
	abuse.RaiseNoFile(t, 65536)
	f := newFixture(t)
	var origRequests atomic.Int64
	var ln net.Listener
	inNetns(t, f.pod, func() (err error) { ln, err = net.Listen("tcp", podIP+":"+abusePort); return err })
	srv := abuse.Serve(ln, &origRequests)
	t.Cleanup(func() { srv.Close() })
	agent := f.startAgent("--ttl", "30s")
	tg := abuse.Target{
		Addr: podIP + ":" + abusePort,
		Within: func(fn func()) {
			inNetns(t, f.svc, func() error { fn(); return nil })
		},
		AgentPID:     agent.Process.Pid,
		OrigRequests: &origRequests,
	}
	cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
		"http_filter": {"header_filter": "^x-user: me$", "ports": [`+abusePort+`]}}}}}`)
	// Node's own limit on a request head is 16 KiB; the local app takes
	// what the target's (Go) app takes.
	_, appOut := f.startLocal(t, []string{"-f", cfg}, "node", "--max-http-header-size=1100000", "testdata/echoserver.js", abusePort, "local")
	t.Cleanup(func() {
		if t.Failed() {
			b, _ := os.ReadFile(appOut)
			t.Logf("mirrord exec and the local app said:\n%s", b)
		}
	})
	waitFor(t, "the filtered steal", func() bool { return abuse.Ready(tg) })
	abuse.Run(t, tg)
}
