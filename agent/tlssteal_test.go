package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// certKey is a self-signed certificate for names, with its key in PEM
// (PKCS #8, or the key's own format with legacy set: "RSA PRIVATE KEY",
// "EC PRIVATE KEY").
func certKey(t *testing.T, rsaKey, legacy bool, names ...string) (certPEM, keyPEM []byte) {
	t.Helper()
	var priv any
	var pub any
	if rsaKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	} else {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub = k, &k.PublicKey
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test"}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	var kb []byte
	typ := "PRIVATE KEY"
	switch k := priv.(type) {
	case *rsa.PrivateKey:
		if legacy {
			kb, typ = x509.MarshalPKCS1PrivateKey(k), "RSA PRIVATE KEY"
		}
	case *ecdsa.PrivateKey:
		if legacy {
			if kb, err = x509.MarshalECPrivateKey(k); err != nil {
				t.Fatal(err)
			}
			typ = "EC PRIVATE KEY"
		}
	}
	if kb == nil {
		if kb, err = x509.MarshalPKCS8PrivateKey(priv); err != nil {
			t.Fatal(err)
		}
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: kb})
}

// TestKeyPair: the target's certificate and key, read through its root (a
// target of pid 0 is this machine's root), in the formats services keep
// them, and each way they can be wrong with the error that says which file
// and how.
func TestKeyPair(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ecCert, ecKey := certKey(t, false, false, "app.test")
	crt, key := write("tls.crt", ecCert), write("tls.key", ecKey)
	_, otherKey := certKey(t, false, false, "other.test")
	other := write("other.key", otherKey)
	rsaCert, rsaKey := certKey(t, true, true, "rsa.test")
	ecLegacyCert, ecLegacyKey := certKey(t, false, true, "ec.test")
	// A chain file with something else first (a comment block, as some
	// tools write) and the key in the same file.
	combined := write("combined.pem", slices.Concat([]byte("# issued by test\n"),
		pem.EncodeToMemory(&pem.Block{Type: "TRUSTED COMMENT", Bytes: []byte("x")}), ecCert, ecKey))
	// kubelet's Secret volumes: the file is a symlink into ..data.
	if err := os.MkdirAll(filepath.Join(dir, "..2026_data"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("..2026_data/tls.crt", ecCert)
	if err := os.Symlink("..2026_data", filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	linked := filepath.Join(dir, "linked.crt")
	if err := os.Symlink("..data/tls.crt", linked); err != nil {
		t.Fatal(err)
	}
	big := write("big.pem", slices.Concat(ecCert, []byte(strings.Repeat("#", maxPEMFile))))
	badDER := write("bad.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}))
	missing := filepath.Join(dir, "missing.crt")

	for _, tc := range []struct {
		name, cert, key string
		want            string // "" for success; else the error's text
		dnsName         string // success: the leaf's name
	}{
		{name: "PKCS #8 EC key", cert: crt, key: key, dnsName: "app.test"},
		{name: "PKCS #1 RSA key", cert: write("rsa.crt", rsaCert), key: write("rsa.key", rsaKey), dnsName: "rsa.test"},
		{name: "SEC 1 EC key", cert: write("ec.crt", ecLegacyCert), key: write("ec.key", ecLegacyKey), dnsName: "ec.test"},
		{name: "one file with chain and key", cert: combined, key: combined, dnsName: "app.test"},
		{name: "symlinks as in a Secret volume", cert: linked, key: key, dnsName: "app.test"},
		{name: "missing certificate", cert: missing, key: key,
			want: "certificate chain: cannot read " + missing + " in the target's file system: no such file or directory"},
		{name: "missing key", cert: crt, key: missing,
			want: "private key: cannot read " + missing + " in the target's file system: no such file or directory"},
		{name: "relative path", cert: "tls.crt", key: key,
			want: "certificate chain: cannot read tls.crt in the target's file system: invalid argument"},
		{name: "directory", cert: dir, key: key,
			want: "certificate chain: " + dir + " in the target's file system is not a regular file"},
		{name: "file too large", cert: big, key: key,
			want: "certificate chain: " + big + " in the target's file system is larger than 1048576 bytes: not a PEM file"},
		{name: "certificate file holds a key", cert: key, key: key,
			want: "certificate chain: " + key + " holds no PEM certificate"},
		{name: "empty certificate file", cert: write("empty.crt", nil), key: key,
			want: "certificate chain: " + dir + "/empty.crt holds no PEM certificate"},
		{name: "key file holds a certificate", cert: crt, key: crt,
			want: "private key: " + crt + " holds no PEM private key"},
		{name: "key of another certificate", cert: crt, key: other,
			want: "the private key in " + other + " does not match the certificate in " + crt},
		{name: "certificate that does not parse", cert: badDER, key: key,
			want: "certificate " + badDER + " with key " + key + ": x509: malformed certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cert, err := (&target{}).keyPair(tc.cert, tc.key)
			if tc.want != "" {
				if err == nil || err.Error() != tc.want {
					t.Fatalf("keyPair(%s, %s): %v\nwant the error %q", tc.cert, tc.key, err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("keyPair(%s, %s): %v", tc.cert, tc.key, err)
			}
			if cert.Leaf == nil || !slices.Equal(cert.Leaf.DNSNames, []string{tc.dnsName}) {
				t.Errorf("keyPair(%s, %s): leaf %v, want one for %s", tc.cert, tc.key, cert.Leaf, tc.dnsName)
			}
		})
	}
}

// TestProbeTLS: the agent's one handshake with the target's app before
// it steals a TLS port: which ALPN protocols it then offers peers, the
// name it asks for, and an error for each app it cannot stand in for.
func TestProbeTLS(t *testing.T) {
	certPEM, keyPEM := certKey(t, false, false, "app.test", "alt.test")
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	clientPEM, clientKeyPEM := certKey(t, false, false, "agent-client")
	client, err := tls.X509KeyPair(clientPEM, clientKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(client.Leaf)

	// serve accepts connections on a loopback port and handles each
	// with handle, until the test ends.
	serve := func(t *testing.T, handle func(net.Conn)) uint16 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		t.Cleanup(func() { ln.Close(); wg.Wait() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() { defer wg.Done(); defer c.Close(); handle(c) }()
			}
		}()
		return uint16(ln.Addr().(*net.TCPAddr).Port)
	}
	var sniMu sync.Mutex
	var sni []string
	tlsApp := func(alpn []string, auth tls.ClientAuthType) func(net.Conn) {
		cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: alpn, ClientAuth: auth, ClientCAs: clientCAs,
			GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
				sniMu.Lock()
				sni = append(sni, hi.ServerName)
				sniMu.Unlock()
				return nil, nil
			}}
		return func(c net.Conn) {
			tc := tls.Server(c, cfg)
			c.SetDeadline(time.Now().Add(5 * time.Second))
			if tc.Handshake() == nil {
				tc.Read(make([]byte, 1)) // until the agent hangs up
			}
		}
	}
	// A port nothing listens on: one that was just free.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	free := uint16(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()

	for _, tc := range []struct {
		name   string
		port   func(t *testing.T) uint16
		client *tls.Certificate
		want   []string // ALPN offered; nil: an error
		err    string   // the error's text, after "the target's app on 127.0.0.1:PORT "
	}{
		{name: "h2 and http/1.1", port: func(t *testing.T) uint16 { return serve(t, tlsApp([]string{"h2", "http/1.1"}, tls.NoClientCert)) },
			want: []string{"h2", "http/1.1"}},
		{name: "http/1.1 only", port: func(t *testing.T) uint16 { return serve(t, tlsApp([]string{"http/1.1"}, tls.NoClientCert)) },
			want: []string{"http/1.1"}},
		{name: "no ALPN", port: func(t *testing.T) uint16 { return serve(t, tlsApp(nil, tls.NoClientCert)) },
			want: []string{"http/1.1"}},
		{name: "nothing listens", port: func(*testing.T) uint16 { return free }, want: []string{"h2", "http/1.1"}},
		{name: "optional client certificate", port: func(t *testing.T) uint16 { return serve(t, tlsApp([]string{"h2"}, tls.VerifyClientCertIfGiven)) },
			want: []string{"h2", "http/1.1"}},
		{name: "mutual TLS with the client certificate", client: &client,
			port: func(t *testing.T) uint16 { return serve(t, tlsApp([]string{"h2"}, tls.RequireAndVerifyClientCert)) },
			want: []string{"h2", "http/1.1"}},
		{name: "mutual TLS without a client certificate",
			port: func(t *testing.T) uint16 { return serve(t, tlsApp([]string{"h2"}, tls.RequireAndVerifyClientCert)) },
			err:  "asks for a client certificate (mutual TLS) and refuses the agent without one: give the agent a client certificate and key from the target's files (client_cert_pem, client_key_pem)"},
		{name: "plain HTTP", port: func(t *testing.T) uint16 {
			return serve(t, func(c net.Conn) {
				c.Read(make([]byte, 512))
				c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
			})
		}, err: `does not speak TLS (it answered "HTTP/"); a port that is not TLS must not be listed as one`},
		{name: "a server that speaks first", port: func(t *testing.T) uint16 {
			return serve(t, func(c net.Conn) { c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n")); c.Read(make([]byte, 512)) })
		}, err: `does not speak TLS (it answered "SSH-2"); a port that is not TLS must not be listed as one`},
		{name: "hangs up", port: func(t *testing.T) uint16 { return serve(t, func(net.Conn) {}) },
			err: "TLS handshake with the target's app on 127.0.0.1:PORT: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &Agent{log: slog.New(slog.DiscardHandler), target: &target{}}
			sniMu.Lock()
			sni = nil
			sniMu.Unlock()
			port := tc.port(t)
			got, err := a.probeTLS(port, cert.Leaf, tc.client)
			if tc.want != nil {
				if err != nil || !slices.Equal(got, tc.want) {
					t.Fatalf("probeTLS: %v, %v; want %v", got, err, tc.want)
				}
			} else {
				addr := "127.0.0.1:" + itoa(port)
				want := strings.ReplaceAll(tc.err, "PORT", itoa(port))
				if !strings.Contains(want, addr) {
					want = "the target's app on " + addr + " " + want
				}
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("probeTLS: %v, %v; want the error %q", got, err, want)
				}
			}
			sniMu.Lock()
			defer sniMu.Unlock()
			for _, name := range sni {
				// The app's own name, as a peer would ask for it.
				if name != "app.test" {
					t.Errorf("the probe asked for server name %q, want the certificate's first name app.test", name)
				}
			}
		})
	}
}

func itoa(p uint16) string { return strconv.Itoa(int(p)) }
