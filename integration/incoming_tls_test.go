package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "mirrord test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a leaf certificate for names (DNS names, or IP addresses)
// and returns its PEM chain and key.
func (ca *testCA) issue(t *testing.T, usage x509.ExtKeyUsage, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
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

// writePodFile writes a file that only the target sees (its own tmpfs at
// f.podFiles) and returns its path as the target sees it.
func (f *fixture) writePodFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(f.podFiles, name)
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root%s", f.podPID, p), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serveHTTPS runs the target's HTTPS app on addr in the pod, with cert:
// it answers "orig <proto> <server name>" (the name the client asked
// for) and, with clientCAs, requires client certificates they signed
// (mutual TLS), answering with the client's name.
func (f *fixture) serveHTTPS(t *testing.T, addr string, cert tls.Certificate, clientCAs *x509.CertPool) {
	var ln net.Listener
	inNetns(t, f.pod, func() (err error) { ln, err = net.Listen("tcp", addr); return err })
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}
	if clientCAs != nil {
		cfg.ClientCAs, cfg.ClientAuth = clientCAs, tls.RequireAndVerifyClientCert
	}
	srv := &http.Server{TLSConfig: cfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		client := ""
		if len(r.TLS.PeerCertificates) > 0 {
			client = " client=" + r.TLS.PeerCertificates[0].Subject.CommonName
		}
		fmt.Fprintf(w, "orig %s %s%s", r.Proto, r.TLS.ServerName, client)
	})}
	go srv.Serve(tls.NewListener(ln, cfg))
	t.Cleanup(func() { srv.Close() })
}

// curlTLS runs one curl in the svc namespace (one connection, reused by
// each transfer) against https://app.test:PORT with the test's CA, one
// transfer per path; a path of "alice:/p" sends "X-User: alice". It
// returns, per transfer, the body, the HTTP version and the number of
// new connections curl made for it.
func (f *fixture) curlTLS(t *testing.T, caFile, port, proto string, paths ...string) []string {
	t.Helper()
	var args []string
	for i, p := range paths {
		if i > 0 {
			args = append(args, "--next")
		}
		args = append(args, "-sS", proto, "--cacert", caFile, "--resolve", "app.test:"+port+":"+podIP, "-w", " %{http_version} %{num_connects}\n")
		if user, path, ok := strings.Cut(p, ":"); ok {
			args = append(args, "-H", "X-User: "+user)
			p = path
		}
		args = append(args, "https://app.test:"+port+p)
	}
	out, err := exec.Command("ip", append([]string{"netns", "exec", f.svc, "curl"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	return strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
}

// TestIncomingTLSFilteredSteal: a filtered steal of a port whose app
// serves HTTPS with a certificate in the target's files. curl (HTTP/1.1
// and HTTP/2, each over one connection) trusts only the test's CA: the
// agent answers with the target's certificate, the matching requests
// reach the local app (per https_delivery: TLS to a local HTTPS server
// that trust_roots vouch for, or plain HTTP), and the others the target's
// app, over TLS again with the name curl asked for.
func TestIncomingTLSFilteredSteal(t *testing.T) {
	f := newFixture(t)
	ca := newTestCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.pem, 0o644)
	certPEM, keyPEM := ca.issue(t, x509.ExtKeyUsageServerAuth, "app.test", podIP)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPath := f.writePodFile(t, "tls.crt", certPEM)
	keyPath := f.writePodFile(t, "tls.key", keyPEM)
	f.serveHTTPS(t, podIP+":8443", cert, nil)
	// The local app's own certificate, from another CA, for a name of
	// its own.
	localCA := newTestCA(t)
	localDir := t.TempDir()
	lc, lk := localCA.issue(t, x509.ExtKeyUsageServerAuth, "local.test")
	os.WriteFile(filepath.Join(localDir, "local.crt"), lc, 0o644)
	os.WriteFile(filepath.Join(localDir, "local.key"), lk, 0o644)
	os.WriteFile(filepath.Join(localDir, "localca.pem"), localCA.pem, 0o644)
	f.startAgent("--ttl", "30s")

	for _, tc := range []struct {
		name, delivery string
		app            []string
		seen           []string // what the local app prints
	}{
		{"delivery tls", `{"protocol": "tls", "trust_roots": ["` + localDir + `/localca.pem"], "server_name": "local.test"}`,
			[]string{"node", "testdata/tlsserver.js", "8443", "local", localDir + "/local.crt", localDir + "/local.key"},
			// HTTP/2 streams reach it as HTTP/2 (it speaks h2).
			[]string{"GOT /a1 1.1 local.test", "GOT /a2 1.1 local.test", "GOT /h1 2.0 local.test", "GOT /h3 2.0 local.test"}},
		// A plain HTTP/1 server: HTTP/2 streams reach it as HTTP/1.1
		// requests.
		{"delivery tcp", `{"protocol": "tcp"}`,
			[]string{"python3", "testdata/pyserver.py", "8443", "local"},
			[]string{"GOT /a1", "GOT /a2", "GOT /h1", "GOT /h3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
			cfg := writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
				"http_filter": {"header_filter": "^x-user: alice$", "ports": [8443]},
				"tls_ports": [{"port": 8443, "cert_pem": "`+certPath+`", "key_pem": "`+keyPath+`"}],
				"https_delivery": `+tc.delivery+`}}}}`)
			_, outFile := f.startLocal(t, []string{"-f", cfg}, tc.app...)
			waitFor(t, "the filtered steal", func() bool { return f.nftRules(t) == 1 })

			// HTTP/1.1: one connection, requests for both sides in turn.
			got := f.curlTLS(t, caFile, "8443", "--http1.1", "alice:/a1", "/b1", "alice:/a2", "bob:/b2")
			want := []string{"local 1.1 1", "orig HTTP/1.1 app.test 1.1 0", "local 1.1 0", "orig HTTP/1.1 app.test 1.1 0"}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("curl --http1.1 printed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			// HTTP/2 over TLS: the streams of one connection, each
			// its own way.
			got = f.curlTLS(t, caFile, "8443", "--http2", "alice:/h1", "/h2", "alice:/h3", "bob:/h4")
			want = []string{"local 2 1", "orig HTTP/2.0 app.test 2 0", "local 2 0", "orig HTTP/2.0 app.test 2 0"}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("curl --http2 printed\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			b, _ := os.ReadFile(outFile)
			for _, w := range tc.seen {
				if !strings.Contains(string(b), w) {
					t.Errorf("the local app's output lacks %q:\n%s", w, b)
				}
			}
			if n := strings.Count(string(b), "GOT "); n != 4 {
				t.Errorf("the local app saw %d requests, want 4:\n%s", n, b)
			}
		})
	}
}

// TestIncomingTLSBadInput: a TLS port whose certificate cannot be read,
// whose key is not the certificate's, that is not TLS at all, or whose
// app wants a client certificate the agent was not given: one error each,
// naming the key and the file or port, and the port stays with the
// target's app (no redirect). Given a client certificate, the agent
// passes requests on to such an app (mutual TLS) as that client.
func TestIncomingTLSBadInput(t *testing.T) {
	f := newFixture(t)
	ca := newTestCA(t)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.pem, 0o644)
	certPEM, keyPEM := ca.issue(t, x509.ExtKeyUsageServerAuth, "app.test", podIP)
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPath := f.writePodFile(t, "tls.crt", certPEM)
	keyPath := f.writePodFile(t, "tls.key", keyPEM)
	_, otherKey := ca.issue(t, x509.ExtKeyUsageServerAuth, "other.test")
	otherKeyPath := f.writePodFile(t, "other.key", otherKey)
	f.serveHTTPS(t, podIP+":8443", cert, nil)
	f.serveHTTP(f.pod, podIP+":8444", "plain orig")
	// An app that requires client certificates from clientCA.
	clientCA := newTestCA(t)
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	f.serveHTTPS(t, podIP+":8445", cert, pool)
	cc, ck := clientCA.issue(t, x509.ExtKeyUsageClientAuth, "agent-client")
	clientCertPath := f.writePodFile(t, "client.crt", cc)
	clientKeyPath := f.writePodFile(t, "client.key", ck)
	f.startAgent("--ttl", "30s")

	config := func(port, tlsPort string) string {
		return writeConfig(t, `{"target": "pid/1", "feature": {"network": {"incoming": {"mode": "steal",
			"http_filter": {"header_filter": "^x-user: alice$", "ports": [`+port+`]},
			"tls_ports": [`+tlsPort+`], "https_delivery": {"protocol": "tcp"}}}}}`)
	}
	for _, tc := range []struct {
		name, port, tlsPort, want string
	}{
		{"missing certificate", "8443", `{"port": 8443, "cert_pem": "/nonexistent/tls.crt", "key_pem": "` + keyPath + `"}`,
			"feature.network.incoming.tls_ports[0]: TLS on port 8443: certificate chain: cannot read /nonexistent/tls.crt in the target's file system: no such file or directory; port 8443 is left to the target's app"},
		{"key of another certificate", "8443", `{"port": 8443, "cert_pem": "` + certPath + `", "key_pem": "` + otherKeyPath + `"}`,
			"feature.network.incoming.tls_ports[0]: TLS on port 8443: the private key in " + otherKeyPath + " does not match the certificate in " + certPath + "; port 8443 is left"},
		{"certificate file without one", "8443", `{"port": 8443, "cert_pem": "` + keyPath + `", "key_pem": "` + keyPath + `"}`,
			"TLS on port 8443: certificate chain: " + keyPath + " holds no PEM certificate; port 8443 is left"},
		{"not TLS", "8444", `{"port": 8444, "cert_pem": "` + certPath + `", "key_pem": "` + keyPath + `"}`,
			"TLS on port 8444: the target's app on 10.77.0.1:8444 does not speak TLS (it answered \"HTTP/\"); a port that is not TLS must not be listed as one; port 8444 is left"},
		{"mutual TLS without a client certificate", "8445", `{"port": 8445, "cert_pem": "` + certPath + `", "key_pem": "` + keyPath + `"}`,
			"TLS on port 8445: the target's app on 10.77.0.1:8445 asks for a client certificate (mutual TLS) and refuses the agent without one"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
			_, outFile := f.startLocal(t, []string{"-f", config(tc.port, tc.tlsPort)}, "python3", "testdata/pyserver.py", tc.port, "local")
			var out string
			waitFor(t, "the error", func() bool {
				b, _ := os.ReadFile(outFile)
				out = string(b)
				return strings.Contains(out, "tls_ports[0]")
			})
			if !strings.Contains(out, tc.want) || strings.Count(out, "tls_ports[0]") != 1 {
				t.Errorf("mirrord printed\n%s\nwant one error with %q", out, tc.want)
			}
			if n := f.nftRules(t); n != 0 {
				t.Errorf("%d redirect rules in the pod; want none", n)
			}
		})
	}
	// The ports were left alone: their apps answer, the filter's
	// requests included.
	if got := f.curlTLS(t, caFile, "8443", "--http1.1", "alice:/x"); got[0] != "orig HTTP/1.1 app.test 1.1 1" {
		t.Errorf("port 8443 after the failed steals answered %q", got)
	}
	if got, err := f.podGet(t, "http://"+podIP+":8444/"); got != "plain orig" {
		t.Errorf("port 8444 after the failed steal answered %q, %v", got, err)
	}

	t.Run("mutual TLS with a client certificate", func(t *testing.T) {
		waitFor(t, "no subscription left from before", func() bool { return f.nftRules(t) == 0 })
		cfg := config("8445", `{"port": 8445, "cert_pem": "`+certPath+`", "key_pem": "`+keyPath+`",
			"client_cert_pem": "`+clientCertPath+`", "client_key_pem": "`+clientKeyPath+`"}`)
		f.startLocal(t, []string{"-f", cfg}, "python3", "testdata/pyserver.py", "8445", "local")
		waitFor(t, "the filtered steal", func() bool { return f.nftRules(t) == 1 })
		for _, proto := range []string{"--http1.1", "--http2"} {
			got := f.curlTLS(t, caFile, "8445", proto, "alice:/a", "/b")
			v := map[string]string{"--http1.1": "1.1", "--http2": "2"}[proto]
			o := map[string]string{"--http1.1": "HTTP/1.1", "--http2": "HTTP/2.0"}[proto]
			want := []string{"local " + v + " 1", "orig " + o + " app.test client=agent-client " + v + " 0"}
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("curl %s printed\n%s\nwant\n%s", proto, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		}
	})
}
