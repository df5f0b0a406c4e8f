package relay

import (
	"errors"
	"io"
	"net"
	"sync"

	"github.com/hashicorp/yamux"
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
// when src was reset or aborted, it resets dst, so that the reset reaches
// the far end as it would on a direct connection.
func Copy(dst io.Writer, src io.Reader) {
	if wasReset(copyData(dst, src)) {
		Abort(dst)
		return
	}
	CloseWrite(dst)
}

// wasReset says whether a read's error is a reset rather than an end:
// ErrAborted (the way to the agent lost) or a yamux stream the peer reset
// (its Budget did). A TCP connection's reset is passed on as an end, as
// before: a reset stream drops the bytes still buffered on the far side,
// which a direct connection's reset would have let the program read.
func wasReset(err error) bool {
	return errors.Is(err, ErrAborted) || errors.Is(err, yamux.ErrConnectionReset)
}

// Splice copies both ways and returns when both directions are done. It
// does not close a or b; callers do.
//
// A side that may be reset from elsewhere (a Budget's Stream) has the
// other side aborted when it is: its relay may be blocked writing there.
func Splice(a, b io.ReadWriter) {
	if s, ok := a.(aborter); ok {
		s.OnAbort(func() { Abort(b) })
		defer s.OnAbort(nil)
	}
	if s, ok := b.(aborter); ok {
		s.OnAbort(func() { Abort(a) })
		defer s.OnAbort(nil)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		Copy(a, b)
	}()
	Copy(b, a)
	wg.Wait()
}

// aborter is a connection that may be reset from elsewhere (Stream).
type aborter interface{ OnAbort(func()) }

// Buffer sizes of copyData. A connection starts with a small buffer; one
// whose reads fill it (a bulk transfer) moves to a large one, so that a
// download costs a quarter of the reads, writes and yamux frames, while
// idle connections hold no more memory than io.Copy's.
const (
	smallBuffer = 32 << 10
	largeBuffer = 256 << 10
)

// Both come from pools: a short connection (a connect and a request or
// two) would otherwise allocate and clear 32 KiB per direction per relay,
// which was a tenth of a connect's CPU (intproxy.BenchmarkConnect).
var (
	smallBuffers = sync.Pool{New: func() any { b := make([]byte, smallBuffer); return &b }}
	largeBuffers = sync.Pool{New: func() any { b := make([]byte, largeBuffer); return &b }}
)

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
	small := smallBuffers.Get().(*[]byte)
	buf := *small
	var large *[]byte
	defer func() {
		if large != nil {
			largeBuffers.Put(large)
		} else {
			smallBuffers.Put(small)
		}
	}()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return nil
			}
			if n == len(buf) && large == nil {
				smallBuffers.Put(small)
				large = largeBuffers.Get().(*[]byte)
				buf = *large
			}
		}
		if err != nil {
			return err
		}
	}
}
