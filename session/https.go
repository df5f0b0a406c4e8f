package session

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/mirrord-go/mirrord/config"
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
// connection that was TLS on the target (inc.TLS); other connections,
// and every one with protocol "tcp", stay as they are. The server name is,
// as upstream picks it: server_name, else the name in server_cert, else
// the name the peer asked for (SNI), else "localhost". The client offers
// the one protocol the stream carries (ALPN h2 or http/1.1).
func (hd *httpsDelivery) wrap(ctx context.Context, inc *protocol.Incoming, local net.Conn) (net.Conn, error) {
	if inc.TLS == nil || hd.plain {
		return local, nil
	}
	name := hd.serverName
	if name == "" {
		name = inc.TLS.ServerName
	}
	if name == "" {
		name = "localhost"
	}
	cfg := &tls.Config{ServerName: name, NextProtos: []string{inc.TLS.ALPN}}
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
		return nil, fmt.Errorf("TLS to the local app (%s): %w", deliveryKey, err)
	}
	if got := tc.ConnectionState().NegotiatedProtocol; got != "" && got != inc.TLS.ALPN {
		tc.Close()
		return nil, fmt.Errorf("the local app answered TLS with protocol %q, while the request is %s", got, inc.TLS.ALPN)
	}
	return tc, nil
}
