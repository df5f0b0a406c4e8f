package agent

import (
	"errors"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/protocol"
)

// DefaultMaxConnections is how many streams one session may have open
// through the agent at once: the program's outgoing connections and UDP
// flows, the incoming connections delivered to it, its open remote files.
//
// What the agent holds per stream is bounded by flow control: the bytes a
// session's program sent that the destination has not read yet stay in
// the stream's receive buffer, at most agentWindow (yamux grants no more
// until they are read) in a bytes.Buffer that grows by doubling (so up to
// twice that allocated), plus the relay's copy buffer (32 KiB, 256 KiB
// during a bulk transfer). So one session can make the agent hold at most
// DefaultMaxConnections × (2 × agentWindow + 2 × 256 KiB) — and only if every
// one of its connections is stalled mid-upload at once; the count is what
// keeps a runaway program (a connection leak, a load test) from taking
// the agent's pod, and its memory limit, down for every session.
const DefaultMaxConnections = 1024

// agentWindow is the largest receive window the agent grants a stream:
// the bytes a program may have in flight to the agent on one connection.
// The local side keeps the protocol's larger window for downloads.
const agentWindow = 1 << 20

// errSessionFull is a session's refusal past its limit of streams.
type errSessionFull struct{ limit int }

func (e errSessionFull) Error() string {
	return protocol.SessionFull(e.limit)
}

// Unwrap gives the errno the program sees (errorCode): its connect fails
// as on a host out of buffer space.
func (errSessionFull) Unwrap() error { return unix.ENOBUFS }

// checkStreams says whether sess may have one more stream (Run always
// sets a limit; an Agent made by a test may have none).
func (a *Agent) checkStreams(sess *yamux.Session) error {
	// NumStreams counts the one being asked for too when it is the
	// client's (already accepted); the agent's own are asked before.
	if a.maxStreams > 0 && sess.NumStreams() > a.maxStreams {
		return errSessionFull{a.maxStreams}
	}
	return nil
}

// openStream opens a stream to the client of sess for an incoming
// connection, within the session's limit.
func (a *Agent) openStream(sess *yamux.Session) (*yamux.Stream, error) {
	if a.maxStreams > 0 && sess.NumStreams() >= a.maxStreams {
		return nil, errSessionFull{a.maxStreams}
	}
	return sess.OpenStream()
}

// isSessionFull reports whether err is a session's refusal past its limit.
func isSessionFull(err error) bool {
	var e errSessionFull
	return errors.As(err, &e)
}
