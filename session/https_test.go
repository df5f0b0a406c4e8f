package session

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/protocol"
)

// testIssuer signs server certificates for the local app in these tests.
type testIssuer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newIssuer(t *testing.T, name string) *testIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testIssuer{cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue makes a server certificate for names (DNS names; an IP address
// goes into the IP SANs) and returns it with its PEM.
func (is *testIssuer) issue(t *testing.T, names ...string) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "local"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.cert, &key.PublicKey, is.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// tcpPair is a connected pair of loopback TCP connections (unlike
// net.Pipe's, their writes are buffered, as a TLS alert's must be when
// the other side is not reading).
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHTTPSDeliveryChoice: how a request stolen from a TLS port reaches
// the local app (https_delivery): the server name mirrord asks the local
// app for (server_name, else the first DNS name in server_cert, else the
// peer's SNI, else "localhost"), the ALPN protocols it offers (h2 only
// for an HTTP/2 stream) and what the app picked, which certificates it
// trusts (any, trust_roots, exactly server_cert), and "tcp": no TLS at
// all. Each case runs a real TLS handshake with a local server.
func TestHTTPSDeliveryChoice(t *testing.T) {
	dir := t.TempDir()
	issuer, other := newIssuer(t, "local CA"), newIssuer(t, "other CA")
	appCert, appPEM := issuer.issue(t, "app.local", "alt.local")
	appFile := writeFile(t, dir, "app.crt", appPEM)
	ipCert, ipPEM := issuer.issue(t, "127.0.0.1") // no DNS name
	ipFile := writeFile(t, dir, "ip.crt", ipPEM)
	_, otherPEM := other.issue(t, "app.local")
	otherFile := writeFile(t, dir, "other.crt", otherPEM)
	rootsFile := writeFile(t, dir, "roots.pem", issuer.pem)
	rootsDir := filepath.Join(dir, "roots")
	os.Mkdir(rootsDir, 0o755)
	writeFile(t, rootsDir, "a.pem", other.pem)
	writeFile(t, rootsDir, "b.pem", issuer.pem)
	str := func(s string) *string { return &s }

	for _, tc := range []struct {
		name     string
		delivery config.TLSDeliveryConfig
		sni      string // the peer's
		alpn     string // the stream's: "h2" or "http/1.1"
		served   tls.Certificate
		appALPN  []string // what the local app speaks
		// What the local app sees and mirrord ends up with; wantErr:
		// the handshake's error instead.
		wantName, wantProto string
		wantOffered         string
		wantErr             string
	}{
		{name: "server_name first", sni: "peer.test", alpn: "http/1.1", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls", ServerName: str("sn.test"), ServerCert: &appFile},
			wantName: "sn.test", wantProto: "http/1.1", wantOffered: "http/1.1"},
		{name: "server_name without SNI", alpn: "http/1.1", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls", ServerName: str("sn.test")},
			wantName: "sn.test", wantProto: "http/1.1", wantOffered: "http/1.1"},
		{name: "then the first name in server_cert", sni: "peer.test", alpn: "http/1.1", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls", ServerCert: &appFile},
			wantName: "app.local", wantProto: "http/1.1", wantOffered: "http/1.1"},
		{name: "server_cert without a DNS name: the SNI", sni: "peer.test", alpn: "http/1.1", served: ipCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls", ServerCert: &ipFile},
			wantName: "peer.test", wantProto: "http/1.1", wantOffered: "http/1.1"},
		{name: "then the peer's SNI", sni: "peer.test", alpn: "http/1.1", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls"},
			wantName: "peer.test", wantProto: "http/1.1", wantOffered: "http/1.1"},
		{name: "then localhost", alpn: "http/1.1", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls"},
			wantName: "localhost", wantProto: "http/1.1", wantOffered: "http/1.1"},
		{name: "the default protocol is tls", sni: "peer.test", alpn: "http/1.1", served: appCert,
			wantName: "peer.test", wantProto: "http/1.1", wantOffered: "http/1.1"},

		{name: "an HTTP/2 stream offers h2, the app takes it", sni: "peer.test", alpn: "h2", served: appCert,
			appALPN: []string{"h2", "http/1.1"}, delivery: config.TLSDeliveryConfig{Protocol: "tls"},
			wantName: "peer.test", wantProto: "h2", wantOffered: "h2,http/1.1"},
		{name: "an HTTP/2 stream to an HTTP/1.1 app", sni: "peer.test", alpn: "h2", served: appCert,
			appALPN: []string{"http/1.1"}, delivery: config.TLSDeliveryConfig{Protocol: "tls"},
			wantName: "peer.test", wantProto: "http/1.1", wantOffered: "h2,http/1.1"},
		{name: "an HTTP/2 stream to an app without ALPN", sni: "peer.test", alpn: "h2", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls"},
			wantName: "peer.test", wantProto: "http/1.1", wantOffered: "h2,http/1.1"},
		{name: "an HTTP/1.1 request does not offer h2", sni: "peer.test", alpn: "http/1.1", served: appCert,
			appALPN: []string{"h2", "http/1.1"}, delivery: config.TLSDeliveryConfig{Protocol: "tls"},
			wantName: "peer.test", wantProto: "http/1.1", wantOffered: "http/1.1"},

		{name: "trust_roots vouch for the app", sni: "peer.test", alpn: "http/1.1", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls", TrustRoots: []string{rootsFile}, ServerName: str("alt.local")},
			wantName: "alt.local", wantProto: "http/1.1", wantOffered: "http/1.1"},
		{name: "trust_roots as a directory", sni: "app.local", alpn: "http/1.1", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls", TrustRoots: []string{rootsDir}},
			wantName: "app.local", wantProto: "http/1.1", wantOffered: "http/1.1"},
		{name: "trust_roots and a name the certificate lacks", sni: "peer.test", alpn: "http/1.1", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls", TrustRoots: []string{rootsFile}},
			wantErr:  "TLS to the local app (feature.network.incoming.https_delivery): tls: failed to verify certificate: x509: certificate is valid for app.local, alt.local, not peer.test"},
		{name: "trust_roots of another CA", sni: "app.local", alpn: "http/1.1", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls", TrustRoots: []string{writeFile(t, dir, "otherca.pem", other.pem)}},
			wantErr:  "TLS to the local app (feature.network.incoming.https_delivery): tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{name: "server_cert is another certificate", sni: "peer.test", alpn: "http/1.1", served: appCert,
			delivery: config.TLSDeliveryConfig{Protocol: "tls", ServerCert: &otherFile},
			wantErr:  "TLS to the local app (feature.network.incoming.https_delivery): the local server's certificate is not the one in feature.network.incoming.https_delivery.server_cert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hd, err := newHTTPSDelivery(tc.delivery)
			if err != nil {
				t.Fatal(err)
			}
			server, client := tcpPair(t)
			defer server.Close()
			type seen struct {
				name, offered, proto string
				err                  error
			}
			done := make(chan seen, 1)
			go func() {
				var s seen
				cfg := &tls.Config{Certificates: []tls.Certificate{tc.served}, NextProtos: tc.appALPN,
					GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
						s.name, s.offered = hi.ServerName, strings.Join(hi.SupportedProtos, ",")
						return nil, nil
					}}
				tc := tls.Server(server, cfg)
				s.err = tc.Handshake()
				s.proto = tc.ConnectionState().NegotiatedProtocol
				if s.err != nil {
					server.Close() // the client may wait for an alert
				}
				done <- s
			}()
			inc := &protocol.Incoming{TLS: &protocol.IncomingTLS{ServerName: tc.sni, ALPN: tc.alpn}}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			conn, proto, err := hd.wrap(ctx, inc, client)
			if err != nil {
				client.Close()
			}
			s := <-done
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("wrap: %v\nwant the error %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("wrap: %v (the local app: %v)", err, s.err)
			}
			defer conn.Close()
			if s.name != tc.wantName || s.offered != tc.wantOffered || proto != tc.wantProto {
				t.Errorf("the local app was asked for %q with ALPN %q, and mirrord got %q; want %q, %q, %q",
					s.name, s.offered, proto, tc.wantName, tc.wantOffered, tc.wantProto)
			}
			if _, ok := conn.(*tls.Conn); !ok {
				t.Errorf("wrap returned a %T, want a TLS connection", conn)
			}
		})
	}

	t.Run("tcp: plain HTTP, no TLS", func(t *testing.T) {
		// Files that do not exist are not read for tcp.
		hd, err := newHTTPSDelivery(config.TLSDeliveryConfig{Protocol: "tcp", ServerCert: str(filepath.Join(dir, "missing"))})
		if err != nil {
			t.Fatal(err)
		}
		server, client := net.Pipe()
		defer server.Close()
		defer client.Close()
		inc := &protocol.Incoming{TLS: &protocol.IncomingTLS{ServerName: "peer.test", ALPN: "h2"}}
		conn, proto, err := hd.wrap(context.Background(), inc, client)
		if err != nil || conn != client || proto != "http/1.1" {
			t.Errorf("wrap: %v, %q, %v; want the connection as it was, http/1.1", conn, proto, err)
		}
	})
}

// TestHTTPSDeliveryFiles: files https_delivery names that cannot serve
// are one error each, naming the key (with its index) and the file.
func TestHTTPSDeliveryFiles(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := writeFile(t, dir, "not.pem", []byte("hello\n"))
	keyOnly := writeFile(t, dir, "key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")}))
	emptyDir := filepath.Join(dir, "empty")
	os.Mkdir(emptyDir, 0o755)
	good := writeFile(t, dir, "ca.pem", newIssuer(t, "local CA").pem)
	for _, tc := range []struct {
		name string
		d    config.TLSDeliveryConfig
		want string
	}{
		{"trust_roots: missing file", config.TLSDeliveryConfig{Protocol: "tls", TrustRoots: []string{good, missing}},
			"feature.network.incoming.https_delivery.trust_roots[1]: stat " + missing + ": no such file or directory"},
		{"trust_roots: no certificate", config.TLSDeliveryConfig{Protocol: "tls", TrustRoots: []string{notPEM}},
			"feature.network.incoming.https_delivery.trust_roots[0]: " + notPEM + " holds no PEM certificate"},
		{"trust_roots: empty directory", config.TLSDeliveryConfig{TrustRoots: []string{emptyDir}},
			"feature.network.incoming.https_delivery.trust_roots[0]: " + emptyDir + " holds no PEM certificate"},
		{"server_cert: missing file", config.TLSDeliveryConfig{Protocol: "tls", ServerCert: &missing},
			"feature.network.incoming.https_delivery.server_cert: open " + missing + ": no such file or directory"},
		{"server_cert: a key, no certificate", config.TLSDeliveryConfig{Protocol: "tls", ServerCert: &keyOnly},
			"feature.network.incoming.https_delivery.server_cert: " + keyOnly + " holds no PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := newHTTPSDelivery(tc.d)
			if err == nil || err.Error() != tc.want {
				t.Errorf("newHTTPSDelivery: %v\nwant %q", err, tc.want)
			}
		})
	}
}
