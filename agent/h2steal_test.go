package agent

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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

// TestH2cUpgradeConnect: after an h2c upgrade the upstreams speak
// HTTP/1.1, where a CONNECT is a tunnel: its stream's data went unframed
// onto the upstream connection, where the app read it as the start of the
// next request (the fuzzer found the app reading "8AC97AGET /h2c"; here it
// would read "X-GET /after"). The agent answers CONNECT itself there, and
// the next stream's request reaches the app intact.
func TestH2cUpgradeConnect(t *testing.T) {
	w := newStealWorld(t)
	agentSide, cliSide := sessionPair(t)
	defer agentSide.Close()
	stopLocal := servesHTTP(streamListener{cliSide}, echoApp("local"))
	defer stopLocal()
	in, _, orig := fuzzIncoming(t, w.app, agentSide, "steal")
	client, err := net.Dial("tcp", w.front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := w.front.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer server.Close()
		in.serveFiltered(server, orig)
	}()
	client.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(client)
	io.WriteString(client, h2cUpgradeRequest+h2Preface)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	fr := http2.NewFramer(client, br)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	headers := func(id uint32, end bool, kv ...string) {
		hb.Reset()
		for i := 0; i < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: end, EndHeaders: true})
	}
	answer := func(id uint32) string {
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				t.Fatalf("waiting for the answer of stream %d: %v", id, err)
			}
			if h, ok := f.(*http2.MetaHeadersFrame); ok && h.StreamID == id {
				for _, hf := range h.RegularFields() {
					if hf.Name == "x-echo" {
						return hf.Value
					}
				}
				return h.PseudoValue("status")
			}
		}
	}
	fr.WriteSettings()
	if got := answer(1); got != "app "+requestDigest("GET", "/h2c", nil) {
		t.Fatalf("upgrade request answered %q", got)
	}
	headers(3, false, ":method", "CONNECT", ":authority", "app:80")
	fr.WriteData(3, true, []byte("X-"))
	if got := answer(3); got != "501" {
		t.Errorf("CONNECT answered %q, want 501", got)
	}
	headers(5, true, getHeaders("/after")...)
	if got, want := answer(5), "app "+requestDigest("GET", "/after", nil); got != want {
		t.Errorf("the request after the CONNECT: answered %q, want %q (the digest of GET /after)", got, want)
	}
	client.Close()
	<-done
}
