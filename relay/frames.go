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
	out     []byte // frames to send once the pending frame is out

	// With a budget, the frames read are followed too: the header being
	// read, the body bytes still to come, and what was read past a frame
	// boundary while a made-up frame waited for one. Only yamux's reader
	// reads; in (the frames to hand it) is under imu, not mu, which a
	// write blocked on a slow connection may hold.
	budget *Budget
	rhdr   [yamuxHeaderSize]byte
	rhdrN  int
	body   uint32
	carry  []byte
	imu    sync.Mutex
	in     []byte
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
		if err == nil && len(c.out) > 0 {
			_, err = c.Conn.Write(c.out)
			c.out = c.out[:0]
		}
		return max(int(n)-yamuxHeaderSize, 0), err
	}
	if len(p) == yamuxHeaderSize && c.budget != nil {
		c.budget.frame(false, p)
	}
	if len(p) == yamuxHeaderSize && p[1] == yamuxTypeData && binary.BigEndian.Uint32(p[8:]) > 0 {
		copy(c.hdr[:], p)
		c.pending = true
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// injectOut sends frame to the peer between two of yamux's frames.
func (c *frameConn) injectOut(frame []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending {
		c.out = append(c.out, frame...)
		return
	}
	c.Conn.Write(frame)
}

// injectIn hands frame to yamux's reader between two of the peer's frames.
func (c *frameConn) injectIn(frame []byte) {
	c.imu.Lock()
	c.in = append(c.in, frame...)
	c.imu.Unlock()
}

// Read follows the frames read (for the budget: which stream each body
// is for) and hands yamux's reader the made-up frames at a frame
// boundary: while one waits, a read returns no more than the rest of the
// frame it is in, keeping what came after for the next.
func (c *frameConn) Read(p []byte) (int, error) {
	if c.budget == nil {
		return c.Conn.Read(p)
	}
	c.imu.Lock()
	waiting := len(c.in) > 0
	if waiting && c.rhdrN == 0 && c.body == 0 {
		n := copy(p, c.in)
		c.in = c.in[n:]
		c.imu.Unlock()
		return n, nil
	}
	c.imu.Unlock()
	var n int
	var err error
	if len(c.carry) > 0 {
		n = copy(p, c.carry)
		c.carry = c.carry[n:]
	} else {
		n, err = c.Conn.Read(p)
	}
	m := c.follow(p[:n], waiting && err == nil)
	if m < n {
		c.carry = append(append([]byte(nil), p[m:n]...), c.carry...)
	}
	return m, err
}

// follow reads the frames in b, which continue those read before; with
// stop, it stops at the first frame boundary and returns how far it read.
func (c *frameConn) follow(b []byte, stop bool) int {
	i := 0
	for i < len(b) {
		if c.body > 0 {
			k := min(int(c.body), len(b)-i)
			c.body -= uint32(k)
			i += k
		} else {
			k := copy(c.rhdr[c.rhdrN:], b[i:])
			c.rhdrN += k
			i += k
			if c.rhdrN < yamuxHeaderSize {
				continue
			}
			c.rhdrN = 0
			c.budget.frame(true, c.rhdr[:])
			if c.rhdr[1] == yamuxTypeData {
				c.body = binary.BigEndian.Uint32(c.rhdr[8:])
			}
		}
		if stop && c.body == 0 && c.rhdrN == 0 {
			return i
		}
	}
	return i
}
