package agent

import (
	"errors"

	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
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
// during a bulk transfer). The count keeps a runaway program (a
// connection leak, a load test) from taking the agent's pod down for every
// session; what its connections hold together is bounded by the session's
// byte budget (DefaultMaxSessionBytes), since DefaultMaxConnections ×
// (2 × agentWindow + 2 × 256 KiB) is far above the pod's memory limit.
const DefaultMaxConnections = 1024

// agentWindow is the largest receive window the agent grants a stream:
// the bytes a program may have in flight to the agent on one connection.
// The local side keeps the protocol's larger window for downloads. 512 KiB
// uploads as fast as 1 MiB did (hermetic TestBench, interleaved: 1,246 and
// 1,228 MB/s against 1,064 and 1,193) in half the memory per stalled one.
const agentWindow = 512 << 10

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
func (a *Agent) openStream(sess *yamux.Session) (*relay.Stream, error) {
	if a.maxStreams > 0 && sess.NumStreams() >= a.maxStreams {
		return nil, errSessionFull{a.maxStreams}
	}
	st, err := sess.OpenStream()
	if err != nil {
		return nil, err
	}
	return a.stream(sess, st), nil
}

// DefaultMaxSessionBytes is how many bytes the agent holds for one session
// at most (relay.Budget): what its program sent that the destination has
// not taken yet, and what the agent is sending it while its window is
// shut. Without it, a session's bound would be the count of its streams
// times a window and a copy buffer each (DefaultMaxConnections), far above
// the agent pod's memory limit: a program uploading to destinations that
// never read, or clients of a stolen port that never read their answers,
// could take the agent down for every session. Past it, the connections
// that hold the most and moved the fewest bytes lately are reset, and
// the program sees ECONNRESET. A stalled upload holds a window
// (agentWindow), counted twice since yamux's buffer grows by doubling
// (relay.Budget), and a copy buffer: 1.25 MiB, so 16 MiB leaves room for
// about 13 uploads stalled at once. With 1,000 uploads to a destination
// that never reads, the agent's RssAnon peaked at 66 MiB in the first
// moments (every stream's first window, 256 KiB, arrives before the first
// reset) and settled at 25 MiB (hermetic, GOMEMLIMIT 80 MiB as in its
// pod), against 196 MiB and rising without a budget.
const DefaultMaxSessionBytes = 16 << 20

// newBudget returns the byte budget of a session from remote, which logs
// each connection it resets.
func (a *Agent) newBudget(remote string) *relay.Budget {
	return relay.NewBudget(a.maxBytes, func(id uint32, held int64) {
		a.log.Warn("session over its byte budget: reset the connection holding the most", "remote", remote, "stream", id, "held", held, "budget", a.maxBytes)
	})
}

// stream wraps st, a stream of sess, for sess's budget (a test's Agent
// may have none).
func (a *Agent) stream(sess *yamux.Session, st *yamux.Stream) *relay.Stream {
	if b, ok := a.budgets.Load(sess); ok {
		return b.(*relay.Budget).Stream(st)
	}
	return relay.NewBudget(0, nil).Stream(st)
}

// isSessionFull reports whether err is a session's refusal past its limit.
func isSessionFull(err error) bool {
	var e errSessionFull
	return errors.As(err, &e)
}
