package session

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/intproxy"
	"github.com/mirrord-go/mirrord/protocol"
)

// tlsPortSpec is the agent request's TLS part for the target's port
// remote, when feature.network.incoming.tls_ports lists it (index i), and
// the subscription is a filtered steal; otherwise nil.
func tlsPortSpec(in config.IncomingConfig, remote uint16, filtered bool) (spec *protocol.TLSPort, i int) {
	if !filtered || in.Mode != config.IncomingSteal {
		return nil, -1
	}
	for i, tp := range in.TLSPorts {
		if tp.Port != remote {
			continue
		}
		spec = &protocol.TLSPort{CertPEM: tp.CertPEM, KeyPEM: tp.KeyPEM}
		if tp.ClientCertPEM != nil && tp.ClientKeyPEM != nil {
			spec.ClientCertPEM, spec.ClientKeyPEM = *tp.ClientCertPEM, *tp.ClientKeyPEM
		}
		return spec, i
	}
	return nil, -1
}

// httpsDelivery is how requests stolen from a TLS port reach the local
// app (feature.network.incoming.https_delivery): in the clear ("tcp"), or
// with TLS again ("tls", the default) from a client that trusts what the
// settings say.
type httpsDelivery struct {
	plain bool
	roots *x509.CertPool // trust_roots: the server's chain must lead to one
	// pinned: server_cert's end-entity certificate, the one the local
	// server must present.
	pinned     *x509.Certificate
	serverName string // server_name, or the name in server_cert
}

const deliveryKey = "feature.network.incoming.https_delivery"

// newHTTPSDelivery reads the files https_delivery names; an error names
// the key and the file.
func newHTTPSDelivery(d config.TLSDeliveryConfig) (*httpsDelivery, error) {
	hd := &httpsDelivery{plain: d.Protocol == "tcp"}
	if hd.plain {
		return hd, nil
	}
	if d.ServerName != nil {
		hd.serverName = *d.ServerName
	}
	if len(d.TrustRoots) > 0 {
		hd.roots = x509.NewCertPool()
		for i, p := range d.TrustRoots {
			n, err := addRoots(hd.roots, p)
			if err != nil {
				return nil, fmt.Errorf("%s.trust_roots[%d]: %w", deliveryKey, i, err)
			}
			if n == 0 {
				return nil, fmt.Errorf("%s.trust_roots[%d]: %s holds no PEM certificate", deliveryKey, i, p)
			}
		}
	}
	if d.ServerCert != nil {
		b, err := os.ReadFile(*d.ServerCert)
		if err != nil {
			return nil, fmt.Errorf("%s.server_cert: %w", deliveryKey, err)
		}
		certs := pemCerts(b)
		if len(certs) == 0 {
			return nil, fmt.Errorf("%s.server_cert: %s holds no PEM certificate", deliveryKey, *d.ServerCert)
		}
		hd.pinned = certs[0]
		if hd.serverName == "" && len(certs[0].DNSNames) > 0 {
			hd.serverName = certs[0].DNSNames[0]
		}
	}
	return hd, nil
}

// addRoots adds the certificates of a PEM file, or of the files of a
// directory (not its subdirectories), to pool.
func addRoots(pool *x509.CertPool, p string) (int, error) {
	st, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	files := []string{p}
	if st.IsDir() {
		entries, err := os.ReadDir(p)
		if err != nil {
			return 0, err
		}
		files = files[:0]
		for _, e := range entries {
			if e.Type().IsRegular() {
				files = append(files, filepath.Join(p, e.Name()))
			}
		}
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return n, err
		}
		for _, c := range pemCerts(b) {
			pool.AddCert(c)
			n++
		}
	}
	return n, nil
}

// pemCerts parses the certificates of a PEM file, skipping other entries.
func pemCerts(b []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return out
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

// wrap puts TLS on local, the connection to the local app, for a
// connection that was TLS on the target (inc.TLS); with protocol "tcp" it
// stays as it is. The server name is, as upstream picks it: server_name,
// else the name in server_cert, else the name the peer asked for (SNI),
// else "localhost". It returns the protocol the local app speaks on the
// connection: for an HTTP/2 stream the client offers h2 and http/1.1
// (ALPN), and the app's choice decides whether the stream is spliced or
// translated (deliverTLS); for HTTP/1.1, http/1.1 alone.
func (hd *httpsDelivery) wrap(ctx context.Context, inc *protocol.Incoming, local net.Conn) (net.Conn, string, error) {
	if hd.plain {
		return local, "http/1.1", nil
	}
	name := hd.serverName
	if name == "" {
		name = inc.TLS.ServerName
	}
	if name == "" {
		name = "localhost"
	}
	cfg := &tls.Config{ServerName: name, NextProtos: []string{"http/1.1"}}
	if inc.TLS.ALPN == "h2" {
		cfg.NextProtos = []string{"h2", "http/1.1"}
	}
	switch {
	case hd.roots != nil:
		cfg.RootCAs = hd.roots
	case hd.pinned != nil:
		// server_cert: the local server must present this certificate,
		// whoever signed it.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, hd.pinned.Raw) {
				return errors.New("the local server's certificate is not the one in " + deliveryKey + ".server_cert")
			}
			return nil
		}
	default:
		// Upstream's default: an anonymous client that trusts any
		// certificate the local app presents.
		cfg.InsecureSkipVerify = true
	}
	tc := tls.Client(local, cfg)
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, "", fmt.Errorf("TLS to the local app (%s): %w", deliveryKey, err)
	}
	proto := tc.ConnectionState().NegotiatedProtocol
	if proto == "" {
		proto = "http/1.1" // a server without ALPN
	}
	return tc, proto, nil
}

// deliverTLS delivers a connection that was TLS on the target to the local
// app (first: connected, and wrapped per https_delivery; dial connects
// and wraps more). An HTTP/2 stream goes as it is to a local app that
// speaks h2; to one that speaks only HTTP/1.1 (a plain HTTP server with
// protocol "tcp", an HTTPS server without h2) mirrord serves the stream's
// HTTP/2 itself and passes each request on over HTTP/1.1 connections.
func deliverTLS(inc *protocol.Incoming, conn, first net.Conn, proto string, scheme string, dial func(context.Context) (net.Conn, error)) {
	if inc.TLS.ALPN != "h2" || proto == "h2" {
		intproxy.DeliverTo(inc, conn, first)
		return
	}
	defer conn.Close()
	var mu sync.Mutex
	tr := &http.Transport{
		DisableCompression:  true, // bodies pass as they are
		MaxIdleConnsPerHost: 16,
	}
	dialOne := func(ctx context.Context, _, _ string) (net.Conn, error) {
		mu.Lock()
		c := first
		first = nil
		mu.Unlock()
		if c != nil {
			return c, nil
		}
		return dial(ctx)
	}
	tr.DialContext, tr.DialTLSContext = dialOne, dialOne
	defer tr.CloseIdleConnections()
	defer func() {
		if first != nil {
			first.Close()
		}
	}()
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host = scheme, "local"
			// Rewrite drops these; the app is to see what the peer sent.
			for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
		},
		Transport:     tr,
		FlushInterval: -1,
		ErrorLog:      log.New(io.Discard, "", 0),
	}
	//lint:ignore SA1019 net/http serves HTTP/2 only from a listener; this is one stream of the agent's
	(&http2.Server{}).ServeConn(conn, &http2.ServeConnOpts{Handler: proxy})
}
