package agent

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
)

// A filtered connection's requests and their answers are parsed with
// net/http (the filters need the headers, the relay the body's framing),
// but a head goes on as the peer or the app sent it whenever its message
// has a plain framing: its header names keep their case and order, its
// request line its target and version, and nothing is added. Writing the
// parsed message again (Request.Write, Response.Write) was a third of the
// agent's work per request (BenchmarkFilteredSteal's profile) and showed
// the app a rewritten head.

// rawHeadMax bounds the head a headTap keeps: a longer one is written
// again from its parsed form (and costs more than its copy).
const rawHeadMax = 16 << 10

// headTap sits under the bufio.Reader a head is parsed from and keeps the
// bytes read while the head is: with what the reader held before, they
// begin with the head, and what the reader holds after is what followed it.
type headTap struct {
	r    io.Reader
	on   bool
	over bool
	buf  []byte
}

func (t *headTap) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if t.on && n > 0 {
		if len(t.buf)+n > rawHeadMax {
			t.over = true
		} else {
			t.buf = append(t.buf, p[:n]...)
		}
	}
	return n, err
}

// begin starts a head, of which br (which reads from t) may hold the first
// bytes.
func (t *headTap) begin(br *bufio.Reader) {
	held, _ := br.Peek(br.Buffered())
	t.on, t.over = true, len(held) > rawHeadMax
	if !t.over {
		t.buf = append(t.buf[:0], held...)
	}
}

// end ends the head, now parsed from br, and returns its bytes (valid until
// the next begin), or nil if they are not known whole.
func (t *headTap) end(br *bufio.Reader) []byte {
	t.on = false
	k := len(t.buf) - br.Buffered()
	if t.over || k <= 0 {
		return nil
	}
	head := t.buf[:k]
	// A head ends with an empty line; net/http also takes bare LFs.
	if !bytes.HasSuffix(head, []byte("\n\n")) && !bytes.HasSuffix(head, []byte("\n\r\n")) {
		return nil
	}
	return head
}

// forwardRequest writes req, being read from src (nil: its body is held
// whole), to w: its head as the peer sent it (raw, nil if not known) and
// its body as it comes, when the body's framing is a plain length and its
// target a path; otherwise through writeRequest (so the targets that
// keepTarget leaves alone keep their old way: an absolute URI reaches the
// app as a path).
func forwardRequest(w io.Writer, req *http.Request, src *bufio.Reader, raw []byte) error {
	t := req.RequestURI
	if raw == nil || len(req.TransferEncoding) > 0 || req.ContentLength < 0 || !strings.HasPrefix(t, "/") || strings.HasPrefix(t, "//") {
		return writeRequest(w, req)
	}
	if req.ContentLength == 0 {
		_, err := w.Write(raw)
		return err
	}
	return writeRaw(w, raw, req.Body, src)
}

// forwardResponse writes resp, being read from src, to the peer c: its
// head as the app sent it (raw, nil if not known or if resp was changed)
// and its body as it comes, unless its framing is chunked; otherwise
// through writePooled.
func forwardResponse(c net.Conn, resp *http.Response, src *bufio.Reader, raw []byte) error {
	if raw == nil || len(resp.TransferEncoding) > 0 {
		return writePooled(c, resp, src)
	}
	return writeRaw(c, raw, resp.Body, src)
}

var bodyBuffers = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// writeRaw writes head, then body, to w through a buffer of writers,
// flushed whenever src (where body is being read from; nil if body is
// held whole) has nothing more buffered. The copy uses Write only:
// bufio.Writer's ReadFrom would fill its buffer from a body that flushes
// it.
func writeRaw(w io.Writer, head []byte, body io.ReadCloser, src *bufio.Reader) error {
	bw, done := pooledWriter(w)
	defer done()
	bw.Write(head)
	var r io.Reader = body
	if src != nil {
		r = flushingBody{body, bw, src}
	}
	buf := bodyBuffers.Get().(*[]byte)
	defer bodyBuffers.Put(buf)
	if _, err := io.CopyBuffer(struct{ io.Writer }{bw}, struct{ io.Reader }{r}, *buf); err != nil {
		return err
	}
	return bw.Flush()
}
