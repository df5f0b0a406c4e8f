package relay

import (
	"encoding/binary"
	"net"
	"sync"
)

// yamux frame header (github.com/hashicorp/yamux spec.md): version, type,
// flags, stream ID, length; 12 bytes, big endian. A data frame's body of
// `length` bytes follows its header.
const (
	yamuxHeaderSize = 12
	yamuxTypeData   = 0
)

// FrameConn wraps the connection a yamux session runs on so that each
// data frame leaves in one write (writev of header and body). yamux writes
// a frame's 12-byte header and its body in two calls; on a TCP connection
// that is two syscalls and often two segments, and whatever relays the
// connection further (the container runtime's port-forward, the kubelet,
// the API server) reads and forwards the header as a frame of its own.
// Other writes pass through unchanged. Only for connections a yamux
// session writes to.
func FrameConn(c net.Conn) net.Conn { return &frameConn{Conn: c} }

type frameConn struct {
	net.Conn
	mu      sync.Mutex
	hdr     [yamuxHeaderSize]byte
	pending bool   // hdr is a data frame's header whose body comes next
	joined  []byte // header and body, where the connection has no writev
}

func (c *frameConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending {
		c.pending = false
		var n int64
		var err error
		switch c.Conn.(type) {
		case *net.TCPConn, *net.UnixConn: // writev
			bufs := net.Buffers{c.hdr[:], p}
			n, err = bufs.WriteTo(c.Conn)
		default:
			c.joined = append(append(c.joined[:0], c.hdr[:]...), p...)
			var m int
			m, err = c.Conn.Write(c.joined)
			n = int64(m)
		}
		return max(int(n)-yamuxHeaderSize, 0), err
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(c.hdr[:], p)
		c.pending = true
		return len(p), nil
	}
	return c.Conn.Write(p)
}
