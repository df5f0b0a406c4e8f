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
	frames follower
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
		var withheld bool
		if p, withheld = c.budget.sent(p); withheld {
			return yamuxHeaderSize, nil
		}
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
	if waiting && c.frames.between() {
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
	m := c.frames.follow(p[:n], waiting && err == nil, c.budget.peerFrame)
	if m < n {
		c.carry = append(append([]byte(nil), p[m:n]...), c.carry...)
	}
	return m, err
}

// follower follows the frames of a yamux session's byte stream.
type follower struct {
	hdr  [yamuxHeaderSize]byte
	n    int    // bytes of hdr read
	body uint32 // bytes of the current data frame's body still to come
}

// between says whether the bytes followed end at a frame boundary.
func (f *follower) between() bool { return f.n == 0 && f.body == 0 }

// follow reads the frames in b, which continue those followed before,
// calling header with each whole frame header; with stop, it stops at
// the first frame boundary and returns how far it read.
func (f *follower) follow(b []byte, stop bool, header func(hdr []byte)) int {
	i := 0
	for i < len(b) {
		if f.body > 0 {
			k := min(int(f.body), len(b)-i)
			f.body -= uint32(k)
			i += k
		} else {
			k := copy(f.hdr[f.n:], b[i:])
			f.n += k
			i += k
			if f.n < yamuxHeaderSize {
				continue
			}
			f.n = 0
			header(f.hdr[:])
			if f.hdr[1] == yamuxTypeData {
				f.body = binary.BigEndian.Uint32(f.hdr[8:])
			}
		}
		if stop && f.between() {
			return i
		}
	}
	return i
}

// WatchResets wraps the connection a yamux session runs on, on the side
// whose peer keeps a Budget: reset is called with each stream the peer's
// budget reset (the session itself only sees a reset stream).
func WatchResets(c net.Conn, reset func(id uint32)) net.Conn {
	return &resetWatch{Conn: c, reset: reset}
}

type resetWatch struct {
	net.Conn
	frames follower
	reset  func(id uint32)
}

func (w *resetWatch) Read(p []byte) (int, error) {
	n, err := w.Conn.Read(p)
	w.frames.follow(p[:n], false, func(hdr []byte) {
		if hdr[1] == yamuxTypeWindowUpdate && binary.BigEndian.Uint16(hdr[2:])&yamuxFlagRST != 0 &&
			binary.BigEndian.Uint32(hdr[8:]) == budgetResetMark {
			w.reset(binary.BigEndian.Uint32(hdr[4:]))
		}
	})
	return n, err
}
