package relay

import (
	"errors"
	"io"
	"net"
	"sync"
)

// ErrAborted is what a connection's Read returns when its bytes can never
// come (the way to the agent was lost), as opposed to io.EOF, the peer's
// orderly end. Copy then resets the other side instead of closing it.
var ErrAborted = errors.New("connection aborted: the way to the agent was lost")

// Abort resets c: a TCP connection (or one with an Abort method, such as
// netstack's) sends RST, so its peer sees ECONNRESET rather than a clean
// end of stream; anything else is closed.
func Abort(c io.Writer) {
	switch c := c.(type) {
	case interface{ Abort() }:
		c.Abort()
	case *net.TCPConn:
		c.SetLinger(0)
		c.Close()
	case io.Closer:
		c.Close()
	}
}

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

// Copy copies src to dst until src ends, then closes dst's write half;
// when src was aborted (ErrAborted), it resets dst.
func Copy(dst io.Writer, src io.Reader) {
	if errors.Is(copyData(dst, src), ErrAborted) {
		Abort(dst)
		return
	}
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

// Buffer sizes of copyData. A connection starts with a small buffer; one
// whose reads fill it (a bulk transfer) moves to a large one, so that a
// download costs a quarter of the reads, writes and yamux frames, while
// idle connections hold no more memory than io.Copy's.
const (
	smallBuffer = 32 << 10
	largeBuffer = 256 << 10
)

var largeBuffers = sync.Pool{New: func() any { b := make([]byte, largeBuffer); return &b }}

// copyData copies src to dst until src ends or a write fails; it returns
// the read's error (io.EOF at an orderly end), nil after a failed write. Between two
// TCP connections it is io.Copy (the kernel splices); otherwise it reads
// into its own buffer, since io.Copy would let a TCP connection on either
// side copy through a fixed 32 KiB buffer.
func copyData(dst io.Writer, src io.Reader) error {
	if _, ok := dst.(*net.TCPConn); ok {
		if _, ok := src.(*net.TCPConn); ok {
			_, err := io.Copy(dst, src)
			return err
		}
	}
	buf := make([]byte, smallBuffer)
	var large *[]byte
	defer func() {
		if large != nil {
			largeBuffers.Put(large)
		}
	}()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return nil
			}
			if n == len(buf) && large == nil {
				large = largeBuffers.Get().(*[]byte)
				buf = *large
			}
		}
		if err != nil {
			return err
		}
	}
}
