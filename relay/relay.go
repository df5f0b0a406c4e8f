package relay

import (
	"io"
	"net"
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
	copyData(dst, src)
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

// copyData copies src to dst until src ends or a write fails. Between two
// TCP connections it is io.Copy (the kernel splices); otherwise it reads
// into its own buffer, since io.Copy would let a TCP connection on either
// side copy through a fixed 32 KiB buffer.
func copyData(dst io.Writer, src io.Reader) {
	if _, ok := dst.(*net.TCPConn); ok {
		if _, ok := src.(*net.TCPConn); ok {
			io.Copy(dst, src)
			return
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
				return
			}
			if n == len(buf) && large == nil {
				large = largeBuffers.Get().(*[]byte)
				buf = *large
			}
		}
		if err != nil {
			return
		}
	}
}
