package config

import (
	"strings"
	"testing"
)

// TestTLSPortsWarning: a TLS port that no HTTP-filtered steal covers is
// accepted, with a warning that its TLS is not ended; a covered one is
// decoded whole and draws none.
func TestTLSPortsWarning(t *testing.T) {
	for _, tt := range []struct {
		name, incoming, warning string
	}{
		{"mirror", `"mode": "mirror", "http_filter": {"header_filter": "x: y", "ports": [8443]}`, "tls_ports[0]: port 8443 is not stolen with an HTTP filter"},
		{"port not filtered", `"mode": "steal", "http_filter": {"header_filter": "x: y", "ports": [80]}`, "tls_ports[0]: port 8443 is not stolen with an HTTP filter"},
		{"covered", `"mode": "steal", "http_filter": {"header_filter": "x: y", "ports": [8443]}`, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tree, err := ParseBytes([]byte(`{"feature": {"network": {"incoming": {`+tt.incoming+`,
				"tls_ports": [{"port": 8443, "cert_pem": "/etc/tls/tls.crt", "key_pem": "/etc/tls/tls.key", "client_cert_pem": "/c.crt", "client_key_pem": "/c.key"}]}}}}`), JSON, noEnv)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := Decode(tree)
			if err != nil {
				t.Fatal(err)
			}
			got := cfg.Feature.Network.Incoming.TLSPorts
			if len(got) != 1 || got[0].Port != 8443 || got[0].CertPEM != "/etc/tls/tls.crt" || got[0].KeyPEM != "/etc/tls/tls.key" ||
				got[0].ClientCertPEM == nil || *got[0].ClientCertPEM != "/c.crt" || got[0].ClientKeyPEM == nil || *got[0].ClientKeyPEM != "/c.key" {
				t.Errorf("tls_ports decoded as %+v", got)
			}
			w := strings.Join(cfg.Warnings(), "\n")
			if tt.warning == "" && strings.Contains(w, "tls_ports") || tt.warning != "" && !strings.Contains(w, tt.warning) {
				t.Errorf("warnings %q; want %q", w, tt.warning)
			}
		})
	}
}
