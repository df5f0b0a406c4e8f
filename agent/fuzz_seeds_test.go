package agent

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The seeds of the agent's fuzz targets. A few go in with f.Add; the rest
// are files under testdata/fuzz/FuzzXxx, written by
//
//	go test ./agent -run TestWriteFuzzSeeds -write-fuzz-seeds
//
// (crashers the fuzzer finds are added there by go test itself).

var writeFuzzSeeds = flag.Bool("write-fuzz-seeds", false, "write the seed corpora of the agent's fuzz targets to testdata/fuzz")

// basicHTTP1Seeds are the f.Add seeds of the HTTP/1 targets: a request
// for each side, and pipelined ones.
var basicHTTP1Seeds = []string{
	"GET / HTTP/1.1\r\nHost: app\r\n\r\n",
	"GET /x HTTP/1.1\r\nHost: app\r\nX-User: alice\r\n\r\n",
	"GET /local/a HTTP/1.1\r\nHost: app\r\n\r\nPOST /b HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: app\r\nX-User: alice\r\nConnection: close\r\n\r\n",
}

// http1Seeds are the corpus files of the HTTP/1 targets (steal and
// mirror): valid requests, chunked bodies with extensions and trailers,
// pipelining, upgrades, and what a hostile or broken peer sends.
var http1Seeds = map[string]string{
	"get-app":            "GET / HTTP/1.1\r\nHost: app\r\n\r\n",
	"get-local-header":   "GET /x HTTP/1.1\r\nHost: app\r\nX-User: alice\r\n\r\n",
	"get-local-path":     "GET /local/a?b=c HTTP/1.1\r\nHost: app\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
	"pipelined-mixed":    "GET /local/a HTTP/1.1\r\nHost: app\r\n\r\nPOST /b HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: app\r\nX-User: alice\r\n\r\nDELETE /local/d HTTP/1.1\r\nHost: app\r\n\r\n",
	"post-body-local":    "POST /local/up HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{\"a\":[1,2,3]}",
	"chunked-ext":        "POST /local/up HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6;name=\"v a\"\r\n world\r\n0\r\n\r\n",
	"chunked-trailers":   "POST /up HTTP/1.1\r\nHost: app\r\nTrailer: X-Sum\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n0123456789\r\n0\r\nX-Sum: 45\r\nX-Other: 1\r\n\r\nGET /after HTTP/1.1\r\nHost: app\r\nX-User: alice\r\n\r\n",
	"chunked-bad-size":   "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
	"chunked-huge-size":  "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
	"chunked-no-crlf":    "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
	"chunked-gzip":       "POST / HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: gzip, chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
	"cl-and-te":          "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /local/smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
	"two-cl":             "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nhello",
	"huge-cl":            "POST /local/big HTTP/1.1\r\nHost: app\r\nContent-Length: 99999999999\r\n\r\nabc",
	"cl-overflow":        "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: 18446744073709551616\r\n\r\n",
	"cl-negative":        "POST / HTTP/1.1\r\nHost: app\r\nContent-Length: -1\r\n\r\n",
	"expect-continue":    "POST /local/up HTTP/1.1\r\nHost: app\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: app\r\n\r\n",
	"expect-unknown":     "POST / HTTP/1.1\r\nHost: app\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx",
	"websocket-app":      "GET /chat HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
	"websocket-local":    "GET /chat HTTP/1.1\r\nHost: app\r\nX-User: alice\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x88\x80\x00\x00\x00\x00",
	"upgrade-declined":   "GET / HTTP/1.1\r\nHost: app\r\nUpgrade: foo/2\r\nConnection: Upgrade\r\n\r\nGET /local/x HTTP/1.1\r\nHost: app\r\n\r\n",
	"h2c-upgrade":        h2cUpgradeRequest + h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00",
	"h2c-upgrade-body":   "POST /local/h2c HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: \r\nContent-Length: 3\r\n\r\nabc" + h2Preface,
	"h2c-no-settings":    "GET / HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n",
	"h2c-bad-settings":   "GET / HTTP/1.1\r\nHost: app\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: !!!\r\n\r\n",
	"h2-prior-knowledge": h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00",
	"h2-preface-cut":     "PRI * HTTP/2.0\r\n\r\n",
	"http10-no-host":     "GET /local/old HTTP/1.0\r\n\r\n",
	"http10-keepalive":   "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /local/2 HTTP/1.0\r\n\r\n",
	"connection-close":   "GET / HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\nGET /local/ignored HTTP/1.1\r\nHost: app\r\n\r\n",
	"head":               "HEAD /local/h HTTP/1.1\r\nHost: app\r\n\r\nHEAD / HTTP/1.1\r\nHost: app\r\n\r\n",
	"options-star":       "OPTIONS * HTTP/1.1\r\nHost: app\r\n\r\n",
	"connect":            "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01",
	"trace-patch-put":    "TRACE /t HTTP/1.1\r\nHost: app\r\n\r\nPATCH /local/p HTTP/1.1\r\nHost: app\r\nContent-Length: 1\r\n\r\n1PUT /u HTTP/1.1\r\nHost: app\r\nContent-Length: 0\r\n\r\n",
	"absolute-form":      "GET http://example.com/local/x?y=1 HTTP/1.1\r\nHost: other\r\n\r\n",
	"percent-encoded":    "GET /local/%41%2f%zz?q=%20&r=%ff HTTP/1.1\r\nHost: app\r\n\r\nGET /%6cocal/x HTTP/1.1\r\nHost: app\r\n\r\n",
	"bare-lf":            "GET /local/lf HTTP/1.1\nHost: app\n\n",
	"obs-fold":           "GET / HTTP/1.1\r\nHost: app\r\nX-User: bob,\r\n alice\r\n\r\n",
	"header-no-colon":    "GET / HTTP/1.1\r\nHost: app\r\nX-User alice\r\n\r\n",
	"header-space-name":  "GET / HTTP/1.1\r\nHost: app\r\nX-User : alice\r\n\r\n",
	"many-headers":       "GET / HTTP/1.1\r\nHost: app\r\n" + strings.Repeat("X-A: b\r\n", 300) + "X-User: alice\r\n\r\n",
	"long-header":        "GET / HTTP/1.1\r\nHost: app\r\nX-Long: " + strings.Repeat("a", 9000) + "\r\n\r\n",
	"bad-host":           "GET / HTTP/1.1\r\nHost: a b/c\r\n\r\nGET /local/x HTTP/1.1\r\nHost: \r\n\r\n",
	"two-hosts":          "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
	"bad-request-line":   "GET /\r\n\r\n",
	"bad-version":        "GET / HTTP/9.9\r\nHost: app\r\n\r\n",
	"http2-version-line": "GET / HTTP/2.0\r\nHost: app\r\n\r\n",
	"lowercase-method":   "get / HTTP/1.1\r\nHost: app\r\n\r\n",
	"method-only":        "POST ",
	"tls-client-hello":   "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + strings.Repeat("\x00", 32),
	"binary":             "\x00\x01\x02\x03\xff\xfe\xfd\xfc\r\n\r\n",
	"empty":              "",
	"nul-in-path":        "GET /a\x00b HTTP/1.1\r\nHost: app\r\n\r\n",
	"utf8-path":          "GET /local/ä?ü=ö HTTP/1.1\r\nHost: app\r\n\r\n",
	"partial-headers":    "GET / HTTP/1.1\r\nHost: app\r\nX-Us",
	"partial-body":       "POST /local/x HTTP/1.1\r\nHost: app\r\nContent-Length: 10\r\n\r\nabc",
}

// h2Frames writes HTTP/2 frames for a seed: build gets a framer and an
// HPACK block encoder (each call encodes one header list).
func h2Frames(build func(fr *http2.Framer, block func(kv ...string) []byte)) []byte {
	var out, hb bytes.Buffer
	fr := http2.NewFramer(&out, nil)
	fr.AllowIllegalWrites = true
	enc := hpack.NewEncoder(&hb)
	block := func(kv ...string) []byte {
		hb.Reset()
		for i := 0; i+1 < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return bytes.Clone(hb.Bytes())
	}
	build(fr, block)
	return out.Bytes()
}

func getHeaders(path string, extra ...string) []string {
	return append([]string{":method", "GET", ":scheme", "http", ":authority", "app", ":path", path}, extra...)
}

// h2SeedFrames are the seeds of the HTTP/2 target: the frames a client
// sends after the preface, valid and not.
func h2SeedFrames() map[string][]byte {
	settings := func(fr *http2.Framer) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	}
	return map[string][]byte{
		"get-app": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(getHeaders("/")...), EndStream: true, EndHeaders: true})
		}),
		"get-local-and-app": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(getHeaders("/a", "x-user", "alice")...), EndStream: true, EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block(getHeaders("/local/b")...), EndStream: true, EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: block(getHeaders("/c")...), EndStream: true, EndHeaders: true})
			fr.WriteSettingsAck()
		}),
		"post-data-trailers": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/local/up", "content-length", "10"), EndHeaders: true})
			fr.WriteData(3, false, []byte("01234"))
			fr.WriteDataPadded(3, false, []byte("56789"), []byte{0, 0, 0})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block("x-sum", "45"), EndStream: true, EndHeaders: true})
		}),
		"continuation": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			b := block(getHeaders("/local/cont", "x-a", strings.Repeat("a", 100), "x-user", "alice")...)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: b[:10], EndStream: true})
			fr.WriteContinuation(3, false, b[10:50])
			fr.WriteContinuation(3, true, b[50:])
		}),
		"continuation-flood": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(getHeaders("/")...), EndStream: true})
			for range 200 {
				fr.WriteContinuation(3, false, block("x-flood", strings.Repeat("f", 200)))
			}
		}),
		"rst-stream": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(":method", "POST", ":scheme", "http", ":authority", "app", ":path", "/local/r"), EndHeaders: true})
			fr.WriteData(3, false, []byte("part"))
			fr.WriteRSTStream(3, http2.ErrCodeCancel)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block(getHeaders("/after")...), EndStream: true, EndHeaders: true})
		}),
		"rapid-reset": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			for id := uint32(3); id < 3+2*150; id += 2 {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(getHeaders("/local/rr")...), EndStream: true, EndHeaders: true})
				fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
		}),
		"control-frames": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
			fr.WriteWindowUpdate(0, 1<<20)
			fr.WritePriority(3, http2.PriorityParam{StreamDep: 0, Weight: 200, Exclusive: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(getHeaders("/p")...), EndStream: true, EndHeaders: true,
				Priority: http2.PriorityParam{StreamDep: 0, Weight: 15}})
			fr.WriteWindowUpdate(3, 100)
			fr.WriteGoAway(3, http2.ErrCodeNo, []byte("bye"))
		}),
		"connect-with-data": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			// Once smuggled its data into the next request on an
			// HTTP/1.1 upstream (after an h2c upgrade).
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(":method", "CONNECT", ":authority", "app:80"), EndHeaders: true})
			fr.WriteData(3, true, []byte("X-"))
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block(getHeaders("/after")...), EndStream: true, EndHeaders: true})
		}),
		"headers-stream-0": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 0, BlockFragment: block(getHeaders("/")...), EndStream: true, EndHeaders: true})
		}),
		"data-idle-stream": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteData(9, true, []byte("nobody asked"))
		}),
		"even-stream-id": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 2, BlockFragment: block(getHeaders("/")...), EndStream: true, EndHeaders: true})
		}),
		"bad-pseudo-headers": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block("x-before", "1", ":method", "GET", ":path", "/", ":bogus", "x"), EndStream: true, EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block(":method", "CONNECT", ":authority", "example.com:443"), EndHeaders: true})
			fr.WriteData(5, true, []byte("tunnel"))
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: block(getHeaders("/", "connection", "keep-alive", "Upper", "x")...), EndStream: true, EndHeaders: true})
		}),
		"hpack-garbage": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: []byte{0x80, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x3f, 0xe1, 0xff, 0xff, 0x7f}, EndStream: true, EndHeaders: true})
		}),
		"hpack-table-size": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			fr.WriteSettings(http2.Setting{ID: http2.SettingHeaderTableSize, Val: 1 << 30}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 24})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: append([]byte{0x3f, 0xe1, 0x1f}, block(getHeaders("/local/t")...)...), EndStream: true, EndHeaders: true})
		}),
		"huge-frame-length":   append([]byte{0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01}, bytes.Repeat([]byte{'d'}, 64)...),
		"settings-bad-length": {0x00, 0x00, 0x05, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 1, 2, 3, 4, 5},
		"window-overflow": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteWindowUpdate(0, 1<<31-1)
			fr.WriteWindowUpdate(0, 1<<31-1)
		}),
		"unknown-frame": h2Frames(func(fr *http2.Framer, block func(...string) []byte) {
			settings(fr)
			fr.WriteRawFrame(0xfa, 0xff, 3, []byte("extension"))
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(getHeaders("/")...), EndStream: true, EndHeaders: true})
		}),
	}
}

// TestWriteFuzzSeeds writes the seed corpora (with -write-fuzz-seeds).
func TestWriteFuzzSeeds(t *testing.T) {
	if !*writeFuzzSeeds {
		t.Skip("writes testdata/fuzz only with -write-fuzz-seeds")
	}
	write := func(target, name string, values ...any) {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, v := range values {
			switch v := v.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case bool:
				fmt.Fprintf(&b, "bool(%v)\n", v)
			}
		}
		dir := filepath.Join("testdata", "fuzz", target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, s := range http1Seeds {
		write("FuzzFilteredSteal", name, []byte(s))
		write("FuzzFilteredMirror", name, []byte(s))
	}
	for name, s := range h2SeedFrames() {
		write("FuzzFilteredStealH2", "prior-"+name, false, s)
		write("FuzzFilteredStealH2", "upgrade-"+name, true, s)
	}
}
