package relay

import (
	"encoding/binary"
	"net"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
)

// A Budget bounds the bytes one yamux session's streams hold on this side:
// bytes the peer sent that no one has consumed yet (in yamux's receive
// buffers, or read by a relay still writing them on), and bytes a relay
// is writing to the peer while the peer's window is shut. Flow control
// bounds each stream on its own (a window), but not their sum: a program
// that uploads on a thousand connections to destinations that never
// read, or a thousand clients of a stolen port that never read their
// answers, would make the side that relays hold a window and a copy
// buffer for each. hashicorp/yamux has no session-wide receive budget,
// so the Budget keeps one from what crosses the session's connection
// (Conn) and its streams (Stream): over the limit for budgetGrace (or by
// a quarter, at once), it resets streams, those holding the most that
// moved the fewest bytes lately first (victimLocked), until it is within
// the limit again. A reset stream ends on both ends, its relay aborts the
// connection on its other side, and onReset is told. The program on the
// far end sees ECONNRESET, as from a peer that dropped the connection.
type Budget struct {
	limit   int64
	onReset func(id uint32, held int64)

	conn *frameConn
	sess atomic.Pointer[yamux.Session]

	mu       sync.Mutex
	total    int64
	streams  map[uint32]*account
	checking bool // a check is due or running (checkLocked)
	withheld bool // some stream's window is withheld (sent)
	timer    *time.Timer
}

// account is what the Budget knows of one stream.
type account struct {
	held                int64
	localFIN, remoteFIN bool
	st                  *Stream
	// consumed is when the stream's reader last took bytes (or when it
	// began); moved and before are the bytes it took in the second since
	// window and in the one before. Of the streams holding much, the one
	// that moved least lately is reset, the one whose reader has been away
	// longest among equals: not one that is busy moving bytes, even if its
	// reader paused a moment longer than a new stream has been stalled.
	consumed      time.Time
	window        time.Time
	moved, before int64
	// withheld is the window this side granted the stream that the peer
	// was not told of yet (sent).
	withheld uint32
}

// recent returns the bytes a took in the last one to two seconds.
func (a *account) recent(now time.Time) int64 {
	switch d := now.Sub(a.window); {
	case d < time.Second:
		return a.moved + a.before
	case d < 2*time.Second:
		return a.moved
	}
	return 0
}

// took counts n bytes taken by a's reader at now.
func (a *account) took(n int64, now time.Time) {
	if d := now.Sub(a.window); d >= time.Second {
		a.before = 0
		if d < 2*time.Second {
			a.before = a.moved
		}
		a.moved, a.window = 0, now
	}
	a.moved += n
	a.consumed = now
}

// NewBudget returns a budget of limit bytes; onReset (may be nil) is told
// of each stream it resets and the bytes it held.
func NewBudget(limit int64, onReset func(id uint32, held int64)) *Budget {
	if onReset == nil {
		onReset = func(uint32, int64) {}
	}
	return &Budget{limit: limit, onReset: onReset, streams: map[uint32]*account{}}
}

// Conn wraps the connection the budget's session runs on; it is FrameConn
// too. One Conn per Budget.
func (b *Budget) Conn(c net.Conn) net.Conn {
	b.conn = &frameConn{Conn: c, budget: b}
	return b.conn
}

// Attach tells the budget its session, which it pings to have a reset
// take effect on this side at once (see frameConn.Read). Once the session
// ended, the relays of its streams that moved nothing for sessionEndGrace
// are aborted: a relay blocked writing to a destination that never reads
// would otherwise hold its connection and buffers for good, while one
// still passing on what the program sent last goes on.
func (b *Budget) Attach(sess *yamux.Session) {
	b.sess.Store(sess)
	go func() {
		<-sess.CloseChan()
		for {
			time.Sleep(sessionEndGrace)
			now := time.Now()
			b.mu.Lock()
			var stuck []*Stream
			for id, a := range b.streams {
				if now.Sub(a.consumed) < sessionEndGrace {
					continue
				}
				if a.st != nil {
					stuck = append(stuck, a.st)
				}
				b.dropLocked(id, a)
			}
			left := len(b.streams)
			b.mu.Unlock()
			for _, s := range stuck {
				s.aborted()
			}
			if left == 0 {
				return
			}
		}
	}()
}

// sessionEndGrace is how long a relay of a session that ended may move
// nothing before it is aborted.
const sessionEndGrace = 5 * time.Second

// Held returns the bytes the session's streams hold now.
func (b *Budget) Held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.total
}

// Stream wraps a stream of the budget's session so that what it consumes
// and sends is counted, and so that a reset of it reaches its relay.
func (b *Budget) Stream(st *yamux.Stream) *Stream {
	s := &Stream{Stream: st, b: b, id: st.StreamID()}
	b.mu.Lock()
	if a := b.streams[s.id]; a != nil {
		a.st = s
	}
	b.mu.Unlock()
	return s
}

// yamux frame types and flags (spec.md).
const (
	yamuxTypeWindowUpdate = 1
	yamuxFlagSYN          = 1
	yamuxFlagFIN          = 4
	yamuxFlagRST          = 8
)

// bufferGrowth is what a byte waiting in yamux's receive buffer costs, in
// bytes: the buffer is a bytes.Buffer, which grows by doubling and keeps
// its size, so a stalled stream's buffer takes up to twice its window
// (measured: 890 KiB per stream stalled with a 512 KiB window). A byte
// a reader took counts once, in the reader's buffer.
const bufferGrowth = 2

// peerFrame is frame for the headers of the frames the peer sent.
func (b *Budget) peerFrame(hdr []byte) { b.frame(true, hdr) }

// budgetResetMark is the length field of the RST frames a Budget sends
// (a window increment, which a reset stream ignores): WatchResets on the
// peer's side tells them from other resets.
const budgetResetMark = 0x6d627564 // "mbud"

// sent is frame for a frame header this side's yamux writes; while the
// budget is over its limit it withholds the window a stream grants: the
// header to send instead (the same, or the window zeroed when it carries
// flags), or withheld when nothing is to be sent. yamux then believes the
// peer may send more than the peer was told, which is safe; releaseCredit
// grants the rest once the budget is within its limit again. Without it
// the peer could fill every stream's whole window while resets catch up.
func (b *Budget) sent(hdr []byte) (out []byte, withheld bool) {
	typ, flags := hdr[1], binary.BigEndian.Uint16(hdr[2:])
	id, delta := binary.BigEndian.Uint32(hdr[4:]), binary.BigEndian.Uint32(hdr[8:])
	b.frame(false, hdr)
	if typ != yamuxTypeWindowUpdate || id == 0 || delta == 0 || flags&yamuxFlagRST != 0 {
		return hdr, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	a := b.streams[id]
	if a == nil || b.limit <= 0 || b.total <= b.limit {
		return hdr, false
	}
	a.withheld += delta
	b.withheld = true
	if flags == 0 {
		return nil, true
	}
	out = append([]byte(nil), hdr...)
	binary.BigEndian.PutUint32(out[8:], 0)
	return out, false
}

// releaseCredit grants the windows withheld (sent), when the budget is
// within its limit.
func (b *Budget) releaseCredit() {
	b.mu.Lock()
	if !b.withheld || b.total > b.limit {
		b.mu.Unlock()
		return
	}
	b.withheld = false
	var frames []byte
	for id, a := range b.streams {
		if a.withheld == 0 {
			continue
		}
		var hdr [yamuxHeaderSize]byte
		hdr[1] = yamuxTypeWindowUpdate
		binary.BigEndian.PutUint32(hdr[4:], id)
		binary.BigEndian.PutUint32(hdr[8:], a.withheld)
		frames = append(frames, hdr[:]...)
		a.withheld = 0
	}
	b.mu.Unlock()
	if len(frames) > 0 {
		b.conn.injectOut(frames)
	}
}

// frame is called with each frame header that crosses the connection,
// in is whether it came from the peer. A SYN starts an account, a RST or
// the second FIN ends it; a data frame from the peer is held until read.
func (b *Budget) frame(in bool, hdr []byte) {
	typ, flags := hdr[1], binary.BigEndian.Uint16(hdr[2:])
	id, length := binary.BigEndian.Uint32(hdr[4:]), binary.BigEndian.Uint32(hdr[8:])
	if id == 0 || typ > yamuxTypeWindowUpdate {
		return // pings and go-aways
	}
	b.mu.Lock()
	a := b.streams[id]
	if a == nil && flags&yamuxFlagSYN != 0 {
		now := time.Now()
		a = &account{consumed: now, window: now}
		b.streams[id] = a
	}
	if a == nil {
		b.mu.Unlock()
		return
	}
	if in && typ == yamuxTypeData {
		a.held += bufferGrowth * int64(length)
		b.total += bufferGrowth * int64(length)
	}
	if flags&yamuxFlagFIN != 0 {
		if in {
			a.remoteFIN = true
		} else {
			a.localFIN = true
		}
	}
	if flags&yamuxFlagRST != 0 || a.localFIN && a.remoteFIN {
		b.dropLocked(id, a)
	}
	b.checkLocked()
	release := b.withheld && b.total <= b.limit
	b.mu.Unlock()
	if release {
		// Not here: the writer's lock may be held (sent).
		go b.releaseCredit()
	}
}

// add counts n more (or, negative, fewer) bytes held by stream id, and
// resets a stream when that takes the budget past its limit; read says
// that the stream's reader took bytes.
func (b *Budget) add(id uint32, n int64, read bool) {
	b.mu.Lock()
	a := b.streams[id]
	if a == nil {
		b.mu.Unlock()
		return
	}
	a.held += n
	b.total += n
	if n > 0 {
		b.checkLocked()
	} else if read {
		a.took(-n, time.Now())
	}
	release := b.withheld && b.total <= b.limit
	b.mu.Unlock()
	if release {
		b.releaseCredit()
	}
}

// budgetGrace is how long the budget may be over its limit before it
// resets a stream: long enough that a stream whose reader is busy moving
// bytes has taken some (and so is not the one reset), short enough that
// little more arrives meanwhile (each stream's window bounds it too).
const budgetGrace = 100 * time.Millisecond

// checkLocked has the budget checked budgetGrace from now, when it is
// over its limit and no check is due; at once when it is over by a
// quarter: on a fast connection a grace lets every stream fill its
// window before the first reset.
func (b *Budget) checkLocked() {
	if b.limit <= 0 || b.total <= b.limit {
		return
	}
	if b.total > b.limit+b.limit/4 {
		if b.timer != nil {
			b.timer.Stop()
			b.timer = nil
		}
		b.checking = true
		go b.check()
		return
	}
	if !b.checking {
		b.checking = true
		b.timer = time.AfterFunc(budgetGrace, b.check)
	}
}

// check resets streams while the budget is over its limit.
func (b *Budget) check() {
	for {
		b.mu.Lock()
		victim := b.victimLocked()
		if victim == 0 {
			b.checking = false
			b.mu.Unlock()
			b.releaseCredit()
			return
		}
		b.mu.Unlock()
		b.reset(victim)
		collectSoon()
	}
}

// collecting is set while a collection after resets is due.
var collecting atomic.Bool

// collectSoon runs the garbage collector once the relays of the streams
// just reset have ended (collectAfter): resets free a budget's worth of
// buffers at once, which the collector would otherwise leave until the
// heap doubled (or, under a soft memory limit, until near it), so that the
// agent's memory follows what it holds, not what it held.
func collectSoon() {
	if collecting.Swap(true) {
		return
	}
	time.AfterFunc(collectAfter, func() {
		collecting.Store(false)
		debug.FreeOSMemory()
	})
}

const collectAfter = 50 * time.Millisecond

// victimLocked picks the stream to reset when the budget is over its
// limit: of those that hold at least half as much as the one that holds
// the most, the one that moved least lately, and of those the one whose
// reader has been away longest.
func (b *Budget) victimLocked() uint32 {
	if b.total <= b.limit {
		return 0
	}
	var most int64
	for _, a := range b.streams {
		most = max(most, a.held)
	}
	now := time.Now()
	var victim uint32
	var v *account
	var vRecent int64
	for id, a := range b.streams {
		if a.held <= 0 || 2*a.held < most {
			continue
		}
		r := a.recent(now)
		if v == nil || r < vRecent || r == vRecent && a.consumed.Before(v.consumed) {
			victim, v, vRecent = id, a, r
		}
	}
	return victim
}

// reset ends stream id on both ends (a RST frame to the peer, and one
// made to look as if the peer sent it, so that this side's yamux drops
// the stream and its buffer), aborts its relay's other side, and tells
// onReset.
func (b *Budget) reset(id uint32) {
	a := b.forget(id)
	if a == nil {
		return
	}
	b.resetFrames(id, true)
	if a.st != nil {
		a.st.aborted()
	}
	b.onReset(id, a.held)
}

// forget ends the account of stream id and returns it (nil: there was
// none, or it ended already).
func (b *Budget) forget(id uint32) *account {
	b.mu.Lock()
	defer b.mu.Unlock()
	a := b.streams[id]
	if a != nil {
		b.dropLocked(id, a)
	}
	return a
}

// dropLocked ends a, the account of stream id: what it held no longer
// counts.
func (b *Budget) dropLocked(id uint32, a *account) {
	b.total -= a.held
	delete(b.streams, id)
}

// resetFrames sends the peer a RST for stream id and has this side's
// yamux read one; mark says the budget reset it (budgetResetMark).
func (b *Budget) resetFrames(id uint32, mark bool) {
	var hdr [yamuxHeaderSize]byte
	hdr[1] = yamuxTypeWindowUpdate
	binary.BigEndian.PutUint16(hdr[2:], yamuxFlagRST)
	binary.BigEndian.PutUint32(hdr[4:], id)
	b.conn.injectIn(hdr[:])
	if mark {
		binary.BigEndian.PutUint32(hdr[8:], budgetResetMark)
	}
	b.conn.injectOut(hdr[:])
	if sess := b.sess.Load(); sess != nil {
		// yamux's reader takes the made-up frame between two of the
		// peer's; a ping's answer is one, however idle the session.
		go sess.Ping()
	}
}

// A Stream is a yamux stream whose bytes a Budget counts. What a Read
// returns stays counted until the next Read (a relay has written it on by
// then), what a Write is sending until it returns.
type Stream struct {
	*yamux.Stream
	b       *Budget
	id      uint32
	last    atomic.Int64 // what the last Read returned
	onAbort atomic.Pointer[func()]
	gone    atomic.Bool
}

func (s *Stream) Read(p []byte) (int, error) {
	if n := s.last.Swap(0); n > 0 {
		s.b.add(s.id, -n, true)
	}
	n, err := s.Stream.Read(p)
	if n > 0 {
		s.b.add(s.id, -(bufferGrowth-1)*int64(n), false)
		s.last.Add(int64(n))
	}
	return n, err
}

func (s *Stream) Write(p []byte) (int, error) {
	s.b.add(s.id, int64(len(p)), false)
	defer s.b.add(s.id, -int64(len(p)), false)
	return s.Stream.Write(p)
}

// Abort resets the stream on both ends: the program on the far end sees
// ECONNRESET (the relays there abort their side), where Close would let it
// read an orderly end. relay.Abort calls it.
func (s *Stream) Abort() {
	if s.b.forget(s.id) == nil || s.b.conn == nil {
		// Not (or no longer) a stream the budget follows: closed, as a
		// plain yamux stream would be.
		s.Stream.Close()
		return
	}
	s.b.resetFrames(s.id, false)
}

// OnAbort sets what to do when the budget resets the stream, or when the
// session ended and the stream's relay still runs (nil: nothing): Splice
// aborts the connection on the relay's other side, whose writes may be
// what keeps the stream's bytes here, until it returns.
func (s *Stream) OnAbort(f func()) {
	s.onAbort.Store(&f)
	if f != nil && s.gone.Load() {
		f()
	}
}

func (s *Stream) aborted() {
	if s.gone.Swap(true) {
		return
	}
	if f := s.onAbort.Load(); f != nil && *f != nil {
		(*f)()
	}
}
