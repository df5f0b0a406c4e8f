package relay

import (
	"io"
	"net"
	"testing"
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
