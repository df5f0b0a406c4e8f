package agent

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/protocol"
)

// maxPEMFile bounds a certificate or key file the agent reads from the
// target: real chains are a few KiB, and the agent must not read a huge
// file someone pointed it at into memory.
const maxPEMFile = 1 << 20

// tlsRecordHandshake is the first byte of every TLS connection (the
// record that carries the ClientHello).
const tlsRecordHandshake = 0x16

// tlsPort is what the agent needs to end TLS on a stolen port: the
// target's own certificate and key (the agent answers as the target's app
// would), the ALPN protocols it offers peers (those the target's app
// speaks), and the client certificate it presents when it re-encrypts
// requests to the target's app, if any.
type tlsPort struct {
	spec   protocol.TLSPort // as the session asked; sessions on one port must agree
	server *tls.Config
	client *tls.Certificate
}

// loadTLSPort reads the certificate chain and key that spec names in the
// target's file system, checks that they belong together, and asks the
// target's app on port which ALPN protocols it speaks (and whether it
// speaks TLS at all). Every failure is one error that names the port
// and the file, and nothing is changed on the target.
func (a *Agent) loadTLSPort(port uint16, spec *protocol.TLSPort) (*tlsPort, error) {
	cert, err := a.target.keyPair(spec.CertPEM, spec.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS on port %d: %w", port, err)
	}
	tp := &tlsPort{spec: *spec}
	if spec.ClientCertPEM != "" || spec.ClientKeyPEM != "" {
		if spec.ClientCertPEM == "" || spec.ClientKeyPEM == "" {
			return nil, fmt.Errorf("TLS on port %d: a client certificate needs both its chain and its key", port)
		}
		cc, err := a.target.keyPair(spec.ClientCertPEM, spec.ClientKeyPEM)
		if err != nil {
			return nil, fmt.Errorf("TLS on port %d: client certificate: %w", port, err)
		}
		tp.client = &cc
	}
	alpn, err := a.probeTLS(port, cert.Leaf, tp.client)
	if err != nil {
		return nil, fmt.Errorf("TLS on port %d: %w", port, err)
	}
	tp.server = &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   alpn,
		// No client certificate is asked for: the agent could not pass
		// the peer's on to the target's app, which would see the
		// agent's (client_cert_pem) or none. README: "HTTPS".
		ClientAuth: tls.NoClientCert,
	}
	return tp, nil
}

// keyPair reads a PEM certificate chain and its private key from the
// target's file system (resolved inside its root, as file requests are),
// with an error that says which file is wrong and how.
func (t *target) keyPair(certPath, keyPath string) (tls.Certificate, error) {
	certPEM, err := t.readPEM(certPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate chain: %w", err)
	}
	keyPEM, err := t.readPEM(keyPath)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("private key: %w", err)
	}
	// X509KeyPair skips the blocks of other types in either file, so one
	// file with both is fine; say which part is missing or wrong.
	if !hasPEM(certPEM, "CERTIFICATE") {
		return tls.Certificate{}, fmt.Errorf("certificate chain: %s holds no PEM certificate", certPath)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	switch {
	case err == nil:
	case !hasPEMKey(keyPEM):
		return tls.Certificate{}, fmt.Errorf("private key: %s holds no PEM private key", keyPath)
	case strings.Contains(err.Error(), "does not match"):
		// crypto/tls has no sentinel for "private key does not match
		// public key".
		return tls.Certificate{}, fmt.Errorf("the private key in %s does not match the certificate in %s", keyPath, certPath)
	default:
		return tls.Certificate{}, fmt.Errorf("certificate %s with key %s: %w", certPath, keyPath, err)
	}
	return cert, nil
}

// hasPEM says whether b holds a PEM block of type typ.
func hasPEM(b []byte, typ string) bool {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return false
		}
		if blk.Type == typ {
			return true
		}
	}
}

func hasPEMKey(b []byte) bool {
	return hasPEM(b, "PRIVATE KEY") || hasPEM(b, "RSA PRIVATE KEY") || hasPEM(b, "EC PRIVATE KEY")
}

// readPEM reads a small file of the target's.
func (t *target) readPEM(p string) ([]byte, error) {
	fd, err := t.openInRoot(p, unix.O_RDONLY|unix.O_NOCTTY|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s in the target's file system: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	if st, err := f.Stat(); err == nil && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s in the target's file system is not a regular file", p)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxPEMFile+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s in the target's file system: %w", p, err)
	}
	if len(b) > maxPEMFile {
		return nil, fmt.Errorf("%s in the target's file system is larger than %d bytes: not a PEM file", p, maxPEMFile)
	}
	return b, nil
}

// probeTLS makes one TLS handshake with the target's app on port, from
// its network namespace, and returns the ALPN protocols to offer peers:
// h2 and http/1.1 when the app picks h2, http/1.1 alone otherwise. An app
// that answers with something else than TLS is an error, and so is one
// that wants a client certificate none was given for. When nothing
// accepts on the port yet, the agent offers both.
func (a *Agent) probeTLS(port uint16, leaf *x509.Certificate, client *tls.Certificate) ([]string, error) {
	both := []string{"h2", "http/1.1"}
	conn, addr := a.dialPort(port)
	if conn == nil {
		a.log.Warn("incoming: TLS: nothing accepts on the port to check it; offering h2 and http/1.1", "port", port)
		return both, nil
	}
	defer conn.Close()
	asked := false
	cfg := &tls.Config{
		// The agent talks to the app in the app's own network namespace,
		// at an address it dialed itself: there is nothing between them
		// that a check of the app's certificate would guard against.
		InsecureSkipVerify: true,
		NextProtos:         both,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			asked = true
			if client != nil {
				return client, nil
			}
			return &tls.Certificate{}, nil
		},
	}
	if leaf != nil && len(leaf.DNSNames) > 0 {
		cfg.ServerName = leaf.DNSNames[0]
	}
	tc := tls.Client(conn, cfg)
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	err := tc.Handshake()
	if err == nil && asked && client == nil {
		// TLS 1.3: the server checks the client's certificate after the
		// client's handshake is over; a refusal comes as an alert on the
		// first read.
		tc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, rerr := tc.Read(make([]byte, 1)); rerr != nil && !isTimeout(rerr) {
			err = rerr
		}
	}
	var rh tls.RecordHeaderError
	switch {
	case errors.As(err, &rh):
		return nil, fmt.Errorf("the target's app on %s does not speak TLS (it answered %q); a port that is not TLS must not be listed as one", addr, printable(rh.RecordHeader[:]))
	case err != nil && asked && client == nil:
		return nil, fmt.Errorf("the target's app on %s asks for a client certificate (mutual TLS) and refuses the agent without one: give the agent a client certificate and key from the target's files (client_cert_pem, client_key_pem): %v", addr, err)
	case err != nil:
		return nil, fmt.Errorf("TLS handshake with the target's app on %s: %w", addr, err)
	}
	if tc.ConnectionState().NegotiatedProtocol == "h2" {
		return both, nil
	}
	return []string{"http/1.1"}, nil
}

// printable shows the first bytes a non-TLS server sent.
func printable(b []byte) string {
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '.'
		}
		out[i] = c
	}
	return string(out)
}

// dialPort connects to port in the target's network namespace: on the
// loopback first, then on each of the namespace's addresses (an app may
// listen on the pod's address only). It returns nil when nothing accepts.
func (a *Agent) dialPort(port uint16) (net.Conn, string) {
	candidates := []string{"127.0.0.1", "::1"}
	a.target.inNetns(func() error {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, ad := range addrs {
				if ipn, ok := ad.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
					candidates = append(candidates, ipn.IP.String())
				}
			}
		}
		return nil
	})
	for _, ip := range candidates {
		hp := net.JoinHostPort(ip, fmt.Sprint(port))
		if c, err := a.target.dial(context.Background(), "tcp", hp, 2*time.Second); err == nil {
			return c, hp
		}
	}
	return nil, ""
}

// endedTLS is a filtered connection whose TLS the agent ended: how to
// reach the target's app with TLS again, and what the local side is told.
type endedTLS struct {
	port       *tlsPort
	serverName string // the peer's SNI
	alpn       string // negotiated with the peer; "" for none
}

// incoming is the header's TLS part for requests of this connection that
// go to a local app, whose stream carries proto ("h2" or "http/1.1").
func (e *endedTLS) incoming(proto string) *protocol.IncomingTLS {
	if e == nil {
		return nil
	}
	return &protocol.IncomingTLS{ServerName: e.serverName, ALPN: proto}
}

// dialApp connects to the target's app at orig, with TLS again when the
// peer's was ended: the app sees a TLS client that asks for the name the
// peer asked for (SNI) and the protocol the peer negotiated. A nil e is
// the plain connection.
func (e *endedTLS) dialApp(ctx context.Context, in *incoming, orig netAddrPort) (net.Conn, error) {
	conn, err := in.dialApp(orig)
	if err != nil || e == nil {
		return conn, err
	}
	proto := e.alpn
	if proto == "" {
		proto = "http/1.1"
	}
	cfg := &tls.Config{
		ServerName: e.serverName,
		// See probeTLS: the app is dialed in its own network namespace.
		InsecureSkipVerify: true,
		NextProtos:         []string{proto},
	}
	if c := e.port.client; c != nil {
		cfg.Certificates = []tls.Certificate{*c}
	}
	tc := tls.Client(conn, cfg)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS to the target's app at %s: %w", orig, err)
	}
	return tc, nil
}

// serveTLS serves a connection to a port whose TLS the agent ends: it
// answers the handshake with the target's certificate, then filters the
// requests inside as on a cleartext port (HTTP/1.x per request, HTTP/2
// per stream). Bytes that are not TLS pass to the app untouched. The
// handshake is bounded as a request head is (httplimits.go).
func (in *incoming) serveTLS(c net.Conn, orig netAddrPort, tp *tlsPort) {
	br := bufio.NewReader(c)
	w := in.waiting.add(c)
	first, err := func() ([]byte, error) {
		w.wait(time.Now().Add(firstBytesTimeout))
		return br.Peek(1)
	}()
	if err != nil {
		w.stop()
		return
	}
	if first[0] != tlsRecordHandshake {
		w.stop()
		app, err := in.dialApp(orig)
		if err != nil {
			return
		}
		defer app.Close()
		spliceBuffered(c, br, app)
		return
	}
	w.setDeadline(time.Now().Add(headTimeout))
	tc := tls.Server(bufferedConn{c, br}, tp.server)
	defer tc.Close()
	err = tc.Handshake()
	if w.stop() || err != nil {
		in.a.log.Debug("incoming: TLS handshake with the peer", "port", orig.port, "err", err)
		return
	}
	st := tc.ConnectionState()
	e := &endedTLS{port: tp, serverName: st.ServerName, alpn: st.NegotiatedProtocol}
	if e.alpn == "h2" {
		in.serveH2(tc, orig, nil, nil, e)
		return
	}
	in.serveHTTP(tc, orig, e)
}

// tlsSpec is the subscription's TLS setting, for comparison.
func (s *subscription) tlsSpec() protocol.TLSPort {
	if s.tls == nil {
		return protocol.TLSPort{}
	}
	return s.tls.spec
}
