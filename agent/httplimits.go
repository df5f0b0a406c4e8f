package agent

import (
	"bufio"
	"container/list"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mirrord-go/mirrord/relay"
)

// Limits of the filtered steal, which reads every request head of a
// filtered connection itself, as an HTTP server does, and so must not let
// hostile peers take its memory (the agent's pod has a memory limit, and
// an agent that dies leaves its redirect behind). README: "Limits of the
// HTTP-filtered steal".
const (
	// maxHeaderBytes bounds a request head (request line and headers):
	// net/http's default, so a head a Go app takes passes. A larger one is
	// answered 431 and its connection closed; HTTP/2 advertises it as
	// SETTINGS_MAX_HEADER_LIST_SIZE.
	maxHeaderBytes = 1 << 20
	// headTimeout bounds the time from a request head's first byte to its
	// end (net/http's ReadHeaderTimeout; nginx's client_header_timeout is
	// 60 s): a head still incomplete then is answered 408 and its
	// connection closed. The wait for that first byte, on a kept-alive
	// connection between requests, has no bound of its own.
	headTimeout = 10 * time.Second
	// firstBytesTimeout bounds the wait for the first bytes of a new
	// connection, which tell HTTP/1.x, HTTP/2 and other protocols apart.
	firstBytesTimeout = 30 * time.Second
	// smallHead: the bytes of a head up to here cost no budget. Beyond,
	// they are taken from headBudget, which all heads share.
	smallHead = 8 << 10
	// headBudget bounds the bytes of large heads held at once: a head
	// that finds it spent is answered 431 (heads up to smallHead, nearly
	// all of them, still pass).
	headBudget = 8 << 20
	// maxWaiting bounds the filtered connections that wait: for their
	// first request, for the next one (HTTP/1.x kept alive, HTTP/2 with no
	// stream open), or for the rest of a request head. A new one past the
	// bound ends the one that has waited longest (so does nginx with its
	// idle connections when it runs out): it is answered 408 if a request
	// head had begun, otherwise closed as an idle connection.
	maxWaiting = 1024
)

// headBytes is the part of headBudget the heads being read hold.
var headBytes atomic.Int64

// headLimiter is what a filtered connection's bufio.Reader reads the
// connection through. While a request head is read (between start and
// end) it counts the bytes read, and ends the head with io.EOF, setting
// tooLarge, past maxHeaderBytes or when its share of headBudget cannot
// grow.
type headLimiter struct {
	r        io.Reader
	head     bool
	n        int // bytes read since start
	taken    int // bytes of headBudget held
	tooLarge bool
}

func (l *headLimiter) Read(p []byte) (int, error) {
	if !l.head {
		return l.r.Read(p)
	}
	// The bufio.Reader may hold up to its size of the head from before
	// start: net/http allows as much on top of MaxHeaderBytes.
	room := maxHeaderBytes + 4096 - l.n
	if room <= 0 {
		l.tooLarge = true
		return 0, io.EOF
	}
	p = p[:min(len(p), room)]
	if need := l.n + len(p) - smallHead; need > l.taken {
		if !takeHeadBytes(need - l.taken) {
			l.tooLarge = true
			return 0, io.EOF
		}
		l.taken = need
	}
	n, err := l.r.Read(p)
	l.n += n
	return n, err
}

// start begins a request head.
func (l *headLimiter) start() { l.head, l.n, l.tooLarge = true, 0, false }

// end ends the head (read whole or not) and gives its budget back; it
// says whether the head was too large.
func (l *headLimiter) end() bool {
	headBytes.Add(-int64(l.taken))
	l.head, l.taken = false, 0
	return l.tooLarge
}

func takeHeadBytes(n int) bool {
	for {
		used := headBytes.Load()
		if used+int64(n) > headBudget {
			return false
		}
		if headBytes.CompareAndSwap(used, used+int64(n)) {
			return true
		}
	}
}

// waitList holds the filtered connections that wait, oldest first, and
// ends the oldest past maxWaiting. Its zero value is ready.
type waitList struct {
	mu sync.Mutex
	l  list.List // of *waiter
}

// waiter is one connection's place in a waitList: it waits between
// wait and stop.
type waiter struct {
	wl      *waitList
	c       net.Conn
	elem    *list.Element // in wl.l while it waits
	evicted bool
}

func (wl *waitList) add(c net.Conn) *waiter { return &waiter{wl: wl, c: c} }

// wait puts the connection at the end of the list, with a read deadline
// (zero: none), and ends the oldest waiting one if there are too many.
func (w *waiter) wait(deadline time.Time) {
	wl := w.wl
	wl.mu.Lock()
	defer wl.mu.Unlock()
	if w.evicted {
		return
	}
	w.c.SetReadDeadline(deadline)
	if w.elem == nil {
		w.elem = wl.l.PushBack(w)
	}
	for wl.l.Len() > maxWaiting {
		old := wl.l.Remove(wl.l.Front()).(*waiter)
		old.elem = nil
		old.evicted = true
		// Its pending read fails now, as if its deadline had passed.
		old.c.SetReadDeadline(time.Now())
	}
}

// setDeadline changes the read deadline of a waiting connection, unless
// it was ended.
func (w *waiter) setDeadline(deadline time.Time) {
	w.wl.mu.Lock()
	defer w.wl.mu.Unlock()
	if !w.evicted {
		w.c.SetReadDeadline(deadline)
	}
}

// stop takes the connection out of the list and clears its read
// deadline; it says whether the connection was ended for a newer one.
func (w *waiter) stop() (evicted bool) {
	wl := w.wl
	wl.mu.Lock()
	defer wl.mu.Unlock()
	if w.elem != nil {
		wl.l.Remove(w.elem)
		w.elem = nil
	}
	if !w.evicted {
		w.c.SetReadDeadline(time.Time{})
	}
	return w.evicted
}

// isTimeout says whether err is a read deadline's.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// refuse answers a request head the agent will not read (431, 408); the
// caller then closes the connection.
func refuse(c net.Conn, status int) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "HTTP/1.1 %d %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", status, http.StatusText(status))
	if status == http.StatusRequestHeaderFieldsTooLarge {
		// The peer is likely still sending its head: as net/http does,
		// give the answer a moment to reach it before the close, which
		// resets a connection with unread bytes.
		relay.CloseWrite(c)
		time.Sleep(500 * time.Millisecond)
	}
}

// writers are the buffers responses are written to a filtered
// connection's peer through: taken for one response, so that a connection
// between requests holds none.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 16<<10) }}

// pooledWriter returns a buffer of writers writing to w, and the function
// that gives it back.
func pooledWriter(w io.Writer) (*bufio.Writer, func()) {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw, func() {
		bw.Reset(nil)
		writers.Put(bw)
	}
}

// writePooled is writeResponse to c through a buffer of writers.
func writePooled(c net.Conn, resp *http.Response, src *bufio.Reader) error {
	bw, done := pooledWriter(c)
	defer done()
	return writeResponse(bw, resp, src)
}
