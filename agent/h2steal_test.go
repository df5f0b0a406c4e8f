package agent

import (
	"net/http"
	"testing"
)

func TestH2cUpgrade(t *testing.T) {
	tests := []struct {
		name     string
		header   http.Header
		proto    int
		ok       bool
		settings string
	}{
		{"curl", http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"AAMAAABkAAQAoAAAAAIAAAAA"}}, 1, true, "\x00\x03\x00\x00\x00\x64\x00\x04\x00\xa0\x00\x00\x00\x02\x00\x00\x00\x00"},
		{"padded", http.Header{"Connection": {"upgrade", "http2-settings"}, "Upgrade": {"websocket, h2c"}, "Http2-Settings": {"AAMAAABk"}}, 1, true, "\x00\x03\x00\x00\x00\x64"},
		{"empty settings", http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {""}}, 1, true, ""},
		{"websocket", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}}, 1, false, ""},
		{"no settings header", http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}}, 1, false, ""},
		{"settings not in Connection", http.Header{"Connection": {"Upgrade"}, "Upgrade": {"h2c"}, "Http2-Settings": {""}}, 1, false, ""},
		{"two settings headers", http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"", ""}}, 1, false, ""},
		{"bad base64", http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {"!!"}}, 1, false, ""},
		{"already HTTP/2", http.Header{"Connection": {"Upgrade, HTTP2-Settings"}, "Upgrade": {"h2c"}, "Http2-Settings": {""}}, 2, false, ""},
	}
	for _, tt := range tests {
		req := &http.Request{Header: tt.header, ProtoMajor: tt.proto}
		settings, ok := h2cUpgrade(req)
		if ok != tt.ok || string(settings) != tt.settings {
			t.Errorf("%s: h2cUpgrade = %q, %v; want %q, %v", tt.name, settings, ok, tt.settings, tt.ok)
		}
	}
}
