//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

const httpsApp = "https-app"

// httpsManifest is the HTTPS target of TestIncomingTLS in a namespace of
// its own (%[1]s; %[2]s is the test app's image): the test app serving
// HTTPS on 8443 with the certificate and key of the Secret https-app-tls
// mounted as a volume (files as the app sees them: /etc/tls/tls.crt,
// tls.key; the kubelet makes them symlinks into a ..data directory, which
// the agent must resolve inside the target's root), a readiness probe
// over HTTPS, a Service on 443, and a client pod (the test app again, for
// its `get`) that trusts only the test's CA.
const httpsManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: https-app, namespace: %[1]s, labels: {app: https-app}}
spec:
  replicas: 1
  selector: {matchLabels: {app: https-app}}
  template:
    metadata: {labels: {app: https-app}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: https-app
          image: %[2]s
          imagePullPolicy: Never
          args: [serve]
          ports: [{name: https, containerPort: 8443}]
          env:
            - {name: SERVICE_NAME, value: https-app}
            - {name: PORT, value: "8443"}
            - {name: TLS_CERT_FILE, value: /etc/tls/tls.crt}
            - {name: TLS_KEY_FILE, value: /etc/tls/tls.key}
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: POD_IP, valueFrom: {fieldRef: {fieldPath: status.podIP}}}
          volumeMounts: [{name: tls, mountPath: /etc/tls, readOnly: true}]
          readinessProbe:
            httpGet: {path: /health, port: https, scheme: HTTPS}
            periodSeconds: 2
      volumes:
        - name: tls
          secret:
            secretName: https-app-tls
            items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}, {key: other.key, path: other.key}]
---
apiVersion: v1
kind: Service
metadata: {name: https-app, namespace: %[1]s}
spec:
  selector: {app: https-app}
  ports: [{name: https, port: 443, targetPort: https}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: %[1]s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: client
      image: %[2]s
      imagePullPolicy: Never
      args: [serve]
      env:
        - {name: PORT, value: "8080"}
        - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
        # Go's crypto/x509 takes its roots from here: testapp get trusts
        # the test's CA only.
        - {name: SSL_CERT_FILE, value: /etc/ca/ca.crt}
      volumeMounts: [{name: ca, mountPath: /etc/ca, readOnly: true}]
  volumes:
    - name: ca
      secret: {secretName: https-app-tls, items: [{key: ca.crt, path: ca.crt}, {key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]}
`

// TestIncomingTLS: a filtered steal of a pod's HTTPS port, with the
// certificate and key the pod's app serves (a Secret volume; made by the
// test, from a CA of its own). Clients that trust only that CA — curl on
// this machine (the node) through the Service's ClusterIP, and a pod
// through cluster DNS and the Service — reach the agent, which answers
// with the pod's certificate: requests that match the filter (header
// X-User: alice, or a path under /api/) reach the local app, the others
// the pod's app over TLS again, with the name the client asked for (SNI)
// and its protocol. HTTP/1.1 and HTTP/2 each go over one connection, whose
// requests and streams are routed one by one. Delivery: TLS to a local
// HTTPS server (with trust_roots and server_name; with the defaults, which
// pass the peer's SNI) and plain HTTP (tcp). Then the bad-input cases
// (a missing certificate, a key of another certificate, a port that is
// not TLS): one error each, and the port stays the pod app's. Afterwards nothing is left: no agent
// Job or pod, no nftables table in the pod, the pod ready, its port its
// own.
func TestIncomingTLS(t *testing.T) {
	c := newCluster(t)
	ns := c.namespace(t, "https")
	host := httpsApp + "." + ns + ".svc" // the name curl asks for
	dir := t.TempDir()
	ca := newTestCA(t, "mirrord e2e CA")
	certPEM, keyPEM := ca.issue(t, httpsApp, host, host+".cluster.local")
	_, otherKey := ca.issue(t, "other.test")
	caFile := writeTemp(t, dir, "ca.crt", ca.pem)
	c.kubectl(t, "create", "secret", "generic", "https-app-tls", "-n", ns,
		"--from-file=ca.crt="+caFile,
		"--from-file=tls.crt="+writeTemp(t, dir, "tls.crt", certPEM),
		"--from-file=tls.key="+writeTemp(t, dir, "tls.key", keyPEM),
		"--from-file=other.key="+writeTemp(t, dir, "other.key", otherKey))
	c.apply(t, fmt.Sprintf(httpsManifest, ns, testappImage))
	c.kubectl(t, "rollout", "status", "-n", ns, "deployment/"+httpsApp, "--timeout=90s")
	c.waitReady(t, ns, "client")
	var pods podList
	c.getJSON(t, &pods, "pods", "-n", ns, "-l", "app="+httpsApp)
	if len(pods.Items) != 1 {
		t.Fatalf("%d %s pods, want 1", len(pods.Items), httpsApp)
	}
	podName := pods.Items[0].Metadata.Name
	target := "pod/" + podName
	svcIP := c.serviceIP(t, ns, httpsApp)
	curl := func(proto string, reqs ...string) []transfer {
		t.Helper()
		return curlHTTPS(t, caFile, host, svcIP, proto, reqs...)
	}
	// inCluster GETs path from the client pod: cluster DNS, the Service,
	// HTTP/2 by ALPN (Go's client), the test's CA.
	inCluster := func(path string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return c.run(ctx, "exec", "-n", ns, "client", "--", "/testapp", "get", "https://"+httpsApp+path)
	}
	// podApp checks that a transfer was answered by the pod's app, over
	// proto, for a client that asked for serverName.
	podApp := func(what, body, proto, serverName string) {
		t.Helper()
		var a struct {
			Service       string `json:"service"`
			Proto         string `json:"proto"`
			TLSServerName string `json:"tls_server_name"`
		}
		if err := json.Unmarshal([]byte(body), &a); err != nil || a.Service != httpsApp || a.Proto != proto || a.TLSServerName != serverName {
			t.Errorf("%s: answered %q; want %s's answer over %s for server name %q", what, body, httpsApp, proto, serverName)
		}
	}

	// pod404 checks that the pod's app answered a path it has no
	// handler for (the local apps answer every path).
	pod404 := func(what, body string) {
		t.Helper()
		if body != "404 page not found\n" {
			t.Errorf("%s: answered %q; want %s's 404", what, body, httpsApp)
		}
	}

	// Before any session: the pod's app serves HTTPS with the test's
	// certificate, HTTP/2 included. (It answers "/" with JSON about the
	// request, whatever the query, and other paths with a 404: requests
	// meant for it go to "/?r=ID".)
	//
	// A new Service's ClusterIP is refused until kube-proxy has written
	// its rules, which may come after the rollout reports the pod ready.
	eventually(t, 30*time.Second, func() error {
		_, err := curlHTTPSErr(caFile, host, svcIP, "--http2", "/?r=service-ready")
		return err
	})
	got := curl("--http2", "alice:/?r=before")
	podApp("before the sessions, curl --http2", got[0].body, "HTTP/2.0", host)
	body, err := inCluster("/")
	if err != nil {
		t.Fatalf("the client pod: %v", err)
	}
	podApp("before the sessions, the client pod", body, "HTTP/2.0", httpsApp)

	// The local app's own certificate, from a CA of its own, for a name
	// of its own.
	localCA := newTestCA(t, "mirrord e2e local CA")
	lc, lk := localCA.issue(t, "local.test")
	localCrt, localKey := writeTemp(t, dir, "local.crt", lc), writeTemp(t, dir, "local.key", lk)
	localCAFile := writeTemp(t, dir, "localca.crt", localCA.pem)

	config := func(port int, delivery, cert, key string) string {
		return fmt.Sprintf(`{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[%d, 8443]],
			"http_filter": {"any_of": [{"header": "^x-user: alice$"}, {"path": "^/api/"}], "ports": [8443]},
			"tls_ports": [{"port": 8443, "cert_pem": %q, "key_pem": %q}],
			"https_delivery": %s}}, "fs": "local"}}`, port, cert, key, delivery)
	}
	for _, tc := range []struct {
		engine, name, delivery string
		port                   int
		app                    []string
		// What the local app prints for the requests it gets: per
		// path, the HTTP version it saw and the server name.
		seen func(path, version, serverName string) string
	}{
		{"preload", "delivery tls with trust_roots and server_name",
			`{"protocol": "tls", "trust_roots": ["` + localCAFile + `"], "server_name": "local.test"}`, 18191,
			[]string{"node", "../integration/testdata/tlsserver.js", "18191", "local tls", localCrt, localKey},
			func(path, version, _ string) string { return "GOT " + path + " " + version + " local.test" }},
		// Without server_name or server_cert, the local app gets the
		// name the peer asked for; with no trust settings mirrord
		// trusts whatever it presents (upstream's default).
		{"netstack", "delivery tls with the defaults",
			`{"protocol": "tls"}`, 18192,
			[]string{"node", "../integration/testdata/tlsserver.js", "18192", "local tls", localCrt, localKey},
			func(path, version, serverName string) string { return "GOT " + path + " " + version + " " + serverName }},
		// A plain HTTP/1 server: HTTP/2 streams reach it as HTTP/1.1
		// requests.
		{"preload", "delivery tcp",
			`{"protocol": "tcp"}`, 18193,
			[]string{"python3", "../integration/testdata/pyserver.py", "18193", "local plain"},
			func(path, _, _ string) string { return "GOT " + path + "\n" }},
	} {
		t.Run(tc.engine+"/"+tc.name, func(t *testing.T) {
			localBody := tc.app[3]
			out := c.startLocalIn(t, ns, tc.engine, target, config(tc.port, tc.delivery, "/etc/tls/tls.crt", "/etc/tls/tls.key"), tc.app...)
			waitUntil(t, 2*time.Minute, "the filtered steal", func() bool {
				got := curlHTTPSMaybe(caFile, host, svcIP, "--http1.1", "alice:/?r=wait")
				return len(got) == 1 && got[0].body == localBody
			})

			// HTTP/1.1: one connection, requests for both sides in turn.
			got := curl("--http1.1", "alice:/?r=a1", "/?r=b1", "/api/a2", "bob:/?r=b2")
			checkLocal := func(tr transfer, version string, connects int) {
				t.Helper()
				if tr.body != localBody || tr.version != version || tr.connects != connects {
					t.Errorf("curl: %q over HTTP %s, %d new connections; want the local app's %q over %s, %d", tr.body, tr.version, tr.connects, localBody, version, connects)
				}
			}
			checkLocal(got[0], "1.1", 1)
			podApp("GET /b1 over HTTP/1.1", got[1].body, "HTTP/1.1", host)
			checkLocal(got[2], "1.1", 0)
			podApp("GET /b2 over HTTP/1.1", got[3].body, "HTTP/1.1", host)
			for _, tr := range got[1:] {
				if tr.connects != 0 || tr.version != "1.1" {
					t.Errorf("curl --http1.1: a transfer over HTTP %s with %d new connections; want one HTTP/1.1 connection for all", tr.version, tr.connects)
				}
			}
			// HTTP/2 over TLS: the streams of one connection, each its
			// own way.
			got = curl("--http2", "alice:/?r=h1", "/?r=h2", "/api/h3", "bob:/?r=h4")
			checkLocal(got[0], "2", 1)
			podApp("stream GET /h2", got[1].body, "HTTP/2.0", host)
			checkLocal(got[2], "2", 0)
			podApp("stream GET /h4", got[3].body, "HTTP/2.0", host)
			for _, tr := range got[1:] {
				if tr.connects != 0 || tr.version != "2" {
					t.Errorf("curl --http2: a transfer over HTTP %s with %d new connections; want one HTTP/2 connection for all", tr.version, tr.connects)
				}
			}
			// From a pod, by the Service's name (HTTP/2).
			if body, err := inCluster("/api/c1"); body != localBody {
				t.Errorf("the client pod's GET /api/c1: %q, %v; want the local app", body, err)
			}
			body, err := inCluster("/?r=c2")
			if err != nil {
				t.Errorf("the client pod's GET /c2: %v", err)
			}
			podApp("the client pod's GET /c2", body, "HTTP/2.0", httpsApp)

			seen := readFile(out)
			for _, w := range []string{
				tc.seen("/?r=a1", "1.1", host), tc.seen("/api/a2", "1.1", host),
				tc.seen("/?r=h1", "2.0", host), tc.seen("/api/h3", "2.0", host),
				tc.seen("/api/c1", "2.0", httpsApp),
			} {
				if !strings.Contains(seen, w) {
					t.Errorf("the local app's output lacks %q:\n%s", w, seen)
				}
			}
			for _, p := range []string{"/?r=b1", "/?r=b2", "/?r=h2", "/?r=h4", "/?r=c2", "/health"} {
				if strings.Contains(seen, "GOT "+p+" ") || strings.Contains(seen, "GOT "+p+"\n") {
					t.Errorf("%s, which the filter does not match, reached the local app:\n%s", p, seen)
				}
			}
			if n := strings.Count(seen, "GOT ") - strings.Count(seen, "GOT /?r=wait"); n != 5 {
				t.Errorf("the local app saw %d requests besides the waiting ones, want 5:\n%s", n, seen)
			}
			// The kubelet's HTTPS readiness probes go on reaching the
			// pod's app through the agent.
			c.kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "--timeout=10s", target)
		})
	}

	for _, tc := range []struct{ name, cert, key, want string }{
		{"missing certificate", "/etc/tls/missing.crt", "/etc/tls/tls.key",
			"feature.network.incoming.tls_ports[0]: TLS on port 8443: certificate chain: cannot read /etc/tls/missing.crt in the target's file system: no such file or directory; port 8443 is left to the target's app"},
		{"key of another certificate", "/etc/tls/tls.crt", "/etc/tls/other.key",
			"feature.network.incoming.tls_ports[0]: TLS on port 8443: the private key in /etc/tls/other.key does not match the certificate in /etc/tls/tls.crt; port 8443 is left to the target's app"},
	} {
		t.Run("preload/"+tc.name, func(t *testing.T) {
			out := c.startLocalIn(t, ns, "preload", target, config(18194, `{"protocol": "tcp"}`, tc.cert, tc.key),
				"python3", "../integration/testdata/pyserver.py", "18194", "local")
			var printed string
			waitUntil(t, 2*time.Minute, "the error", func() bool {
				printed = readFile(out)
				return strings.Contains(printed, "tls_ports[0]")
			})
			if !strings.Contains(printed, tc.want) || strings.Count(printed, "tls_ports[0]") != 1 {
				t.Errorf("mirrord printed\n%s\nwant one error with %q", printed, tc.want)
			}
			// The port is the pod app's, for the filter's requests too,
			// and nothing was changed in the pod's network namespace.
			got := curl("--http2", "alice:/?r=x", "/api/y")
			podApp("alice's request after the error", got[0].body, "HTTP/2.0", host)
			pod404("GET /api/y after the error", got[1].body)
			if tables := ourTables(t, podName); len(tables) != 0 {
				t.Errorf("nftables tables %v in the pod after the refused TLS port", tables)
			}
		})
	}

	// A port that is not TLS: the client pod's plain HTTP port, listed
	// as a TLS port with a good certificate and key.
	t.Run("preload/port not TLS", func(t *testing.T) {
		cfg := `{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[18195, 8080]],
			"http_filter": {"header_filter": "^x-user: alice$", "ports": [8080]},
			"tls_ports": [{"port": 8080, "cert_pem": "/etc/ca/tls.crt", "key_pem": "/etc/ca/tls.key"}]}}, "fs": "local"}}`
		out := c.startLocalIn(t, ns, "preload", "pod/client", cfg,
			"python3", "../integration/testdata/pyserver.py", "18195", "local")
		var printed string
		waitUntil(t, 2*time.Minute, "the error", func() bool {
			printed = readFile(out)
			return strings.Contains(printed, "tls_ports[0]")
		})
		const want = `does not speak TLS (it answered "HTTP/"); a port that is not TLS must not be listed as one; port 8080 is left to the target's app`
		if !strings.Contains(printed, "feature.network.incoming.tls_ports[0]: TLS on port 8080: the target's app on ") ||
			!strings.Contains(printed, want) || strings.Count(printed, "tls_ports[0]") != 1 {
			t.Errorf("mirrord printed\n%s\nwant one error with %q", printed, want)
		}
		// The port is the client's app's, for the filter's requests too.
		ip := c.kubectl(t, "get", "pod", "client", "-n", ns, "-o", "jsonpath={.status.podIP}")
		body, err := exec.Command("curl", "-sS", "--max-time", "10", "-H", "X-User: alice", "http://"+net.JoinHostPort(ip, "8080")+"/").CombinedOutput()
		if err != nil || !strings.Contains(string(body), `"hostname": "client"`) {
			t.Errorf("alice's plain request to the client pod after the error: %v\n%s", err, body)
		}
		if tables := ourTables(t, "client"); len(tables) != 0 {
			t.Errorf("nftables tables %v in the client pod after the refused TLS port", tables)
		}
	})

	// Nothing is left behind.
	waitUntil(t, time.Minute, "the agent's Job and pod to be gone", func() bool {
		left := c.kubectl(t, "get", "jobs,pods", "-n", ns, "-l", "app=mirrord", "-o", "name")
		return strings.TrimSpace(left) == ""
	})
	if tables := ourTables(t, podName); len(tables) != 0 {
		t.Errorf("pod %s still has nftables tables %v", podName, tables)
	}
	c.kubectl(t, "wait", "-n", ns, "--for=condition=Ready", "--timeout=10s", target)
	got = curl("--http1.1", "alice:/?r=z", "/api/z")
	podApp("after the sessions, alice's request", got[0].body, "HTTP/1.1", host)
	pod404("after the sessions, GET /api/z", got[1].body)
	if restarts := c.kubectl(t, "get", "-n", ns, target, "-o", "jsonpath={.status.containerStatuses[0].restartCount}"); restarts != "0" {
		t.Errorf("the pod's app restarted %s times", restarts)
	}
}

// transfer is what curl printed for one URL.
type transfer struct {
	body, version string // version: curl's %{http_version}: "1.1", "2"
	connects      int    // new connections curl made for it
}

var transferEnd = regexp.MustCompile(`(?s)(.*?)\n@@ (\S+) (\d+)\n`)

// curlHTTPS runs one curl on this machine (the node) that sends each of
// reqs to https://host (resolved to ip, port 443) over proto (--http1.1,
// --http2), reusing one connection, and trusting caFile only. A request
// "alice:/p" sends "X-User: alice". It fails the test unless curl
// succeeds with one answer per request.
func curlHTTPS(t *testing.T, caFile, host, ip, proto string, reqs ...string) []transfer {
	t.Helper()
	got, err := curlHTTPSErr(caFile, host, ip, proto, reqs...)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// curlHTTPSMaybe is curlHTTPS for polling: nil on errors.
func curlHTTPSMaybe(caFile, host, ip, proto string, reqs ...string) []transfer {
	got, _ := curlHTTPSErr(caFile, host, ip, proto, reqs...)
	return got
}

func curlHTTPSErr(caFile, host, ip, proto string, reqs ...string) ([]transfer, error) {
	var args []string
	for i, r := range reqs {
		if i > 0 {
			args = append(args, "--next")
		}
		// --noproxy: the machine may send other addresses to a proxy;
		// this is the cluster's own Service address.
		args = append(args, "-sS", "--max-time", "10", "--noproxy", "*", proto,
			"--cacert", caFile, "--resolve", host+":443:"+ip, "-w", "\n@@ %{http_version} %{num_connects}\n")
		if user, path, ok := strings.Cut(r, ":"); ok {
			args = append(args, "-H", "X-User: "+user)
			r = path
		}
		args = append(args, "https://"+host+r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "curl", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("curl %s %v: %v: %s\n%s", proto, reqs, err, strings.TrimSpace(stderr.String()), stdout.String())
	}
	var out []transfer
	for _, m := range transferEnd.FindAllStringSubmatch(stdout.String(), -1) {
		n, _ := strconv.Atoi(m[3])
		out = append(out, transfer{body: m[1], version: m[2], connects: n})
	}
	if len(out) != len(reqs) {
		return nil, fmt.Errorf("curl %s %v: %d answers, want %d:\n%s", proto, reqs, len(out), len(reqs), stdout.String())
	}
	return out, nil
}

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a server certificate for DNS names and returns its PEM
// certificate and PKCS #8 key.
func (ca *testCA) issue(t *testing.T, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})
}

func writeTemp(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
