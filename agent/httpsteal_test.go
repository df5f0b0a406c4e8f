package agent

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// upstreamResponse reads a response that an upstream writes in parts:
// each part is written once the previous one was taken (a stream), or
// once step is received from.
func upstreamResponse(t *testing.T, parts []string, step <-chan struct{}) (*http.Response, *bufio.Reader) {
	t.Helper()
	pr, pw := io.Pipe()
	go func() {
		for i, p := range parts {
			if i > 0 {
				<-step
			}
			pw.Write([]byte(p))
		}
		pw.Close()
	}()
	src := bufio.NewReader(pr)
	resp, err := http.ReadResponse(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp, src
}

// TestWriteResponseSplit: a body that arrives after the header (the
// upstream wrote them apart) reaches the peer intact.
func TestWriteResponseSplit(t *testing.T) {
	step := make(chan struct{})
	close(step)
	resp, src := upstreamResponse(t, []string{"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n", "lo", "cal:"}, step)
	var out strings.Builder
	bw := bufio.NewWriterSize(&out, 4096)
	if err := writeResponse(bw, resp, src); err != nil {
		t.Fatal(err)
	}
	got, err := http.ReadResponse(bufio.NewReader(strings.NewReader(out.String())), nil)
	if err != nil {
		t.Fatalf("%v in %q", err, out.String())
	}
	body, _ := io.ReadAll(got.Body)
	if string(body) != "local:" {
		t.Errorf("body %q, want %q (wrote %q)", body, "local:", out.String())
	}
}

// TestWriteResponseStreams: the parts of a body that the upstream sends
// over time reach the peer as they come, not when the response ends.
func TestWriteResponseStreams(t *testing.T) {
	step := make(chan struct{})
	resp, src := upstreamResponse(t, []string{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n", "6\r\nsecond\r\n0\r\n\r\n"}, step)
	peer, mine := net.Pipe()
	defer peer.Close()
	done := make(chan error, 1)
	go func() {
		done <- writeResponse(bufio.NewWriter(mine), resp, src)
		mine.Close()
	}()
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	pr := bufio.NewReader(peer)
	got, err := http.ReadResponse(pr, nil)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 5)
	if _, err := io.ReadFull(got.Body, first); err != nil || string(first) != "first" {
		t.Fatalf("first part: %q, %v (before the upstream sent the second)", first, err)
	}
	close(step)
	rest, _ := io.ReadAll(got.Body)
	if string(rest) != "second" {
		t.Errorf("second part %q", rest)
	}
	if err := <-done; err != nil {
		t.Error(err)
	}
}
