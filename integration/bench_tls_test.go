//go:build bench

package integration

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

const (
	tlsSeqRequests = 500
	tlsSection     = "## Incoming: HTTPS-filtered steal, latency"
)

// TestBenchIncomingTLS times HTTPS requests one at a time, each path on
// one kept-alive connection of its own and the paths in turns: straight to
// an HTTPS app in the pod (no mirrord), through a filtered steal of its
// twin's TLS port that matches (the agent ends TLS, mirrord delivers over
// TLS to the local HTTPS app) and that does not (the agent re-encrypts to
// the target's app). It writes its section of bench/results.md.
func TestBenchIncomingTLS(t *testing.T) {
	f := newFixture(t)
	ca := newTestCA(t)
	certPEM, keyPEM := ca.issue(t, x509.ExtKeyUsageServerAuth, "app.test", podIP)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPath := f.writePodFile(t, "tls.crt", certPEM)
	keyPath := f.writePodFile(t, "tls.key", keyPEM)
	f.serveHTTPS(t, podIP+":8446", cert, nil) // stolen
	f.serveHTTPS(t, podIP+":8447", cert, nil) // direct
	localDir := t.TempDir()
	lc, lk := newTestCA(t).issue(t, x509.ExtKeyUsageServerAuth, "local.test")
	os.WriteFile(filepath.Join(localDir, "local.crt"), lc, 0o644)
	os.WriteFile(filepath.Join(localDir, "local.key"), lk, 0o644)
	f.startAgent("--ttl", "60s")
	cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
		"http_filter": {"header_filter": "^x-user: alice$", "ports": [8446]},
		"tls_ports": [{"port": 8446, "cert_pem": "`+certPath+`", "key_pem": "`+keyPath+`"}]}}}}`)
	f.startLocal(t, []string{"-f", cfg}, "node", "testdata/tlsserver.js", "8446", "local", localDir+"/local.crt", localDir+"/local.key")
	waitFor(t, "the filtered steal", func() bool { return f.nftRules(t) == 1 })

	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	client := func(h2 bool) *http.Client {
		tr := &http.Transport{DialContext: f.svcDialer(t), MaxConnsPerHost: 1,
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "app.test"}, ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		return &http.Client{Timeout: 10 * time.Second, Transport: tr}
	}
	type path struct {
		name, url, user, want string
		client                *http.Client
		took                  []time.Duration
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s\n\nWritten by `make bench` (`TestBenchIncomingTLS`) on %s (%s/%s, %d CPUs, %s; load average %s).\n",
		tlsSection, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), loadAvg())
	fmt.Fprintf(&b, "HTTPS GETs one at a time from the svc namespace, each path on one kept-alive TLS connection, the paths in turns "+
		"(%d requests each after 50 to warm up). The target's app and its twin (direct) are Go HTTPS servers in the pod; the local app is "+
		"`testdata/tlsserver.js` (Node, HTTPS) under `mirrord exec`, delivery `tls`. Matched: the agent ends TLS, mirrord delivers over TLS; "+
		"not matched: the agent re-encrypts to the target's app.\n\n", tlsSeqRequests)
	b.WriteString("| Protocol | Path | p50 ms | p99 ms | p50 added ms |\n|---|---|---:|---:|---:|\n")
	for _, h2 := range []bool{false, true} {
		proto, wantProto := "HTTP/1.1", "HTTP/1.1"
		if h2 {
			proto, wantProto = "HTTP/2", "HTTP/2.0"
		}
		paths := []*path{
			{name: "direct (no mirrord)", url: "https://" + podIP + ":8447/", want: "orig " + wantProto, client: client(h2)},
			{name: "matched: agent → mirrord → local app", url: "https://" + podIP + ":8446/", user: "alice", want: "local", client: client(h2)},
			{name: "not matched: agent → the target's app", url: "https://" + podIP + ":8446/", want: "orig " + wantProto, client: client(h2)},
		}
		for i := range tlsSeqRequests + 50 {
			for _, p := range paths {
				req, _ := http.NewRequest("GET", p.url, nil)
				if p.user != "" {
					req.Header.Set("X-User", p.user)
				}
				start := time.Now()
				resp, err := p.client.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", proto, p.name, err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				took := time.Since(start)
				if !strings.HasPrefix(string(body), p.want) {
					t.Fatalf("%s %s answered %q, want %q", proto, p.name, body, p.want)
				}
				if i >= 50 {
					p.took = append(p.took, took)
				}
			}
		}
		direct := percentile(paths[0].took, 50)
		for _, p := range paths {
			added := ""
			if p != paths[0] {
				added = ms(percentile(p.took, 50) - direct)
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", proto, p.name, ms(percentile(p.took, 50)), ms(percentile(p.took, 99)), added)
			p.client.CloseIdleConnections()
		}
	}
	mergeBenchSection(t, b.String())
	t.Logf("wrote bench/results.md:\n%s", b.String())
}
