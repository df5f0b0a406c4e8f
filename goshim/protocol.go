package goshim

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"

	"golang.org/x/sys/unix"
)

// The parent and the helper talk over a SOCK_STREAM unix socketpair (the
// helper's end is its fd 3). A stream socket, unlike SOCK_SEQPACKET, has no
// message size limit, and a Spec carries a whole environment, which can be
// as large as ARG_MAX. Every message but the go byte is a frame:
//
//	type (1 byte) | payload length (uint32, big endian) | payload
//
// The conversation is strictly ordered, so neither side needs to demultiplex:
//
//	parent → helper  frameSetup    JSON setupMessage
//	helper → parent  frameTUN      JSON readyMessage; the TUN fd attached with
//	                               SCM_RIGHTS, then the FUSE device and the
//	                               view's root when readyMessage.View
//	             or  frameError    setup failed; the helper exits
//	parent → helper  goByte        a single byte, not a frame
//	helper → parent  frameSeccomp  (with Files only) empty, the seccomp
//	                               listener attached; sent just before exec
//	helper → parent  EOF           the program was exec'd (the socket is CLOEXEC)
//	             or  frameError    lookup/exec failed; the helper exits
const (
	frameSetup byte = 'S'
	frameTUN   byte = 'T'
	// frameSeccomp carries the seccomp listener.
	frameSeccomp byte = 'F'
	frameError   byte = 'E'
	goByte       byte = 'G'

	frameHeaderLen = 5
	// maxFrameLen bounds what a peer can make us allocate. A Spec is
	// dominated by its environment, which the kernel caps far below this.
	maxFrameLen = 64 << 20
)

// bindMount asks the helper to bind-mount Source (a file the parent wrote)
// over Target. Optional targets that do not exist are skipped; a required
// one that does not exist is an error, because the program would silently
// see the host's configuration.
type bindMount struct {
	Source   string
	Target   string
	Optional bool
}

// setupMessage is everything the helper needs before it can report ready.
type setupMessage struct {
	Spec     Spec
	Binds    []bindMount
	Syscalls []int       // system call numbers the seccomp filter, installed just before exec, sends to the supervisor
	Files    *filesSetup // nil: no file layer
}

// filesSetup asks the helper for the file layer's FUSE view.
type filesSetup struct {
	View bool // try to create the FUSE view
}

// readyMessage is the payload of frameTUN.
type readyMessage struct {
	View      bool   // the FUSE device and the view's root follow the TUN fd
	ViewError string // why there is no view although it was asked for
}

// errKind tells the parent which sentinel a helper error wraps, so callers
// can use errors.Is on failures that happened in another process.
type errKind byte

const (
	kindOther     errKind = 'o'
	kindUserNS    errKind = 'u'
	kindTUN       errKind = 't'
	kindNotFound  errKind = 'n'
	kindExecFatal errKind = 'x'
)

var (
	// ErrUserNamespace means the kernel refused to create the sandbox's
	// user namespace or to grant capabilities inside it. The error text says
	// which setting to change.
	ErrUserNamespace = errors.New("user namespaces unavailable")
	// ErrTUN means /dev/net/tun is missing or not accessible.
	ErrTUN = errors.New("TUN device unavailable")
)

// helperError is a failure reported by the helper over the socket.
type helperError struct {
	kind errKind
	msg  string
}

func (e *helperError) Error() string { return e.msg }

// Unwrap maps the kind to a sentinel so errors.Is works across processes.
func (e *helperError) Unwrap() error {
	switch e.kind {
	case kindUserNS:
		return ErrUserNamespace
	case kindTUN:
		return ErrTUN
	case kindNotFound:
		return exec.ErrNotFound
	}
	return nil
}

// kindOf picks the kind to send for err (the inverse of Unwrap).
func kindOf(err error) errKind {
	var he *helperError
	switch {
	case errors.As(err, &he):
		return he.kind
	case errors.Is(err, ErrUserNamespace):
		return kindUserNS
	case errors.Is(err, ErrTUN):
		return kindTUN
	case errors.Is(err, exec.ErrNotFound):
		return kindNotFound
	}
	return kindOther
}

// encodeFrame returns the bytes of one frame.
func encodeFrame(typ byte, payload []byte) []byte {
	b := make([]byte, frameHeaderLen, frameHeaderLen+len(payload))
	b[0] = typ
	binary.BigEndian.PutUint32(b[1:], uint32(len(payload)))
	return append(b, payload...)
}

// encodeError returns an error frame for err: its kind, then its text on
// one line (newlines would make the parent's message hard to read).
func encodeError(err error) []byte {
	msg := []byte(err.Error())
	for i, c := range msg {
		if c == '\n' {
			msg[i] = ' '
		}
	}
	return encodeFrame(frameError, append([]byte{byte(kindOf(err))}, msg...))
}

// decodeError turns an error frame's payload back into an error.
func decodeError(payload []byte) error {
	if len(payload) == 0 {
		return &helperError{kind: kindOther, msg: "helper reported an empty error"}
	}
	return &helperError{kind: errKind(payload[0]), msg: string(payload[1:])}
}

// parseHeader validates a frame header and returns its type and length.
func parseHeader(hdr []byte) (byte, int, error) {
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > maxFrameLen {
		return 0, 0, fmt.Errorf("frame of %d bytes exceeds the %d byte limit", n, maxFrameLen)
	}
	return hdr[0], int(n), nil
}

// readFrame reads one frame that carries no file descriptors.
func readFrame(r io.Reader) (byte, []byte, error) {
	hdr := make([]byte, frameHeaderLen)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return 0, nil, err
	}
	typ, n, err := parseHeader(hdr)
	if err != nil {
		return 0, nil, err
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("reading %d byte payload: %w", n, noEOF(err))
	}
	return typ, payload, nil
}

// noEOF turns a clean EOF in the middle of a frame into ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readFrameFDs reads one frame and any file descriptors sent with it.
func readFrameFDs(c *net.UnixConn) (typ byte, payload []byte, fds []int, err error) {
	hdr := make([]byte, frameHeaderLen)
	oob := make([]byte, unix.CmsgSpace(8*4))
	for got := 0; got < len(hdr); {
		n, oobn, _, _, rerr := c.ReadMsgUnix(hdr[got:], oob)
		more, perr := parseRights(oob[:oobn])
		fds = append(fds, more...)
		switch {
		case rerr != nil:
			err = rerr
		case perr != nil:
			err = perr
		case n == 0 && got == 0:
			err = io.EOF
		case n == 0:
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			closeFDs(fds)
			return 0, nil, nil, err
		}
		got += n
	}
	typ, n, err := parseHeader(hdr)
	if err == nil {
		payload = make([]byte, n)
		_, err = io.ReadFull(c, payload)
	}
	if err != nil {
		closeFDs(fds)
		return 0, nil, nil, noEOF(err)
	}
	return typ, payload, fds, nil
}

func parseRights(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("parsing control message: %w", err)
	}
	var fds []int
	for _, m := range msgs {
		more, err := unix.ParseUnixRights(&m)
		if err != nil {
			closeFDs(fds)
			return nil, fmt.Errorf("parsing SCM_RIGHTS: %w", err)
		}
		fds = append(fds, more...)
	}
	return fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}
