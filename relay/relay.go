package relay

import (
	"io"
	"sync"
)

// CloseWrite ends the sending half of w: CloseWrite where the connection
// has one (TCP, gVisor TCP), Close otherwise. A yamux stream has no
// CloseWrite, but its Close is a half-close: the stream can still read.
func CloseWrite(w io.Writer) {
	switch c := w.(type) {
	case interface{ CloseWrite() error }:
		c.CloseWrite()
	case io.Closer:
		c.Close()
	}
}

// Copy copies src to dst until src ends, then closes dst's write half.
func Copy(dst io.Writer, src io.Reader) {
	io.Copy(dst, src)
	CloseWrite(dst)
}

// Splice copies both ways and returns when both directions are done. It
// does not close a or b; callers do.
func Splice(a, b io.ReadWriter) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		Copy(a, b)
	}()
	Copy(b, a)
	wg.Wait()
}
