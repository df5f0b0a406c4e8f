package relay

import (
	"bytes"
	"io"
	"net"
	"sync"
	"testing"

	"github.com/hashicorp/yamux"
)

// TestSpliceHalfClose: after one peer stops sending, the other still gets
// its EOF and can answer, as over a direct TCP connection.
func TestSpliceHalfClose(t *testing.T) {
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	front, back := listen(), listen()
	defer front.Close()
	defer back.Close()
	go func() { // the relay in the middle
		a, _ := front.Accept()
		b, _ := net.Dial("tcp", back.Addr().String())
		Splice(a, b)
		a.Close()
		b.Close()
	}()
	go func() { // the server: reads everything, then answers
		c, _ := back.Accept()
		data, _ := io.ReadAll(c)
		c.Write(append([]byte("got:"), data...))
		c.Close()
	}()
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello"))
	c.(*net.TCPConn).CloseWrite()
	answer, err := io.ReadAll(c)
	if err != nil || string(answer) != "got:hello" {
		t.Fatalf("answer %q, %v", answer, err)
	}
}

// recordConn records the size of each write that reaches the connection.
type recordConn struct {
	net.Conn
	mu     sync.Mutex
	writes []int
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// TestFrameConn: through FrameConn a yamux session writes each data frame
// (header and body) in one piece, and the stream's data arrives intact.
func TestFrameConn(t *testing.T) {
	a, b := net.Pipe()
	rec := &recordConn{Conn: a}
	cfg := yamux.DefaultConfig()
	cfg.EnableKeepAlive = false
	cfg.LogOutput = io.Discard
	client, err := yamux.Client(FrameConn(rec), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := yamux.Server(b, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	want := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 kB: several frames and window updates
	go func() {
		st, err := client.OpenStream()
		if err != nil {
			return
		}
		st.Write(want)
		st.Close()
	}()
	st, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("got %d bytes (%v), want %d", len(got), err, len(want))
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var data int
	for _, n := range rec.writes {
		if n > 12 {
			data += n - 12
		}
	}
	if data != len(want) {
		t.Errorf("writes %v: %d bytes of data in frames with their header, want %d", rec.writes, data, len(want))
	}
}

// TestCopyLargeReads: a bulk copy moves to the large buffer, so a writer
// sees writes larger than io.Copy's 32 KiB, and every byte arrives.
func TestCopyLargeReads(t *testing.T) {
	want := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8}, 1<<17) // 1 MiB
	var w sizeWriter
	Copy(&w, bytes.NewReader(want))
	if !bytes.Equal(w.buf.Bytes(), want) {
		t.Fatalf("copied %d bytes, want %d", w.buf.Len(), len(want))
	}
	if w.max <= 32<<10 {
		t.Errorf("largest write %d bytes, want more than 32 KiB", w.max)
	}
}

type sizeWriter struct {
	buf bytes.Buffer
	max int
}

func (w *sizeWriter) Write(p []byte) (int, error) {
	w.max = max(w.max, len(p))
	return w.buf.Write(p)
}
