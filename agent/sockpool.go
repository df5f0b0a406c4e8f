package agent

import (
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// socketPool keeps a few sockets made in the target's network namespace
// ready for the agent's dials. A socket keeps the namespace it was made
// in, and making one there takes a thread switched into the namespace and
// back (inNetns): BenchmarkTargetDial, a connect to a server in the
// namespace, took 37–59 µs with a switch per socket and 30–40 µs with the
// pool in runs here. Sockets are made poolSize at a time, in one
// switch: when a dial finds none ready, and shortly after the last of a
// run of dials (poolTopUp), which tops every kind in use up to poolSize.
// So an agent at rest holds exactly poolSize unbound, unconnected sockets
// of each kind it has dialed (a little kernel memory and a descriptor
// each), and its count of open files says whether it leaks connections.
type socketPool struct {
	mu    sync.Mutex
	ready map[sockKind][]int
	timer *time.Timer // the next top-up; nil when none is due
	fills sync.WaitGroup
	done  bool // drained: no more top-ups
}

type sockKind struct{ family, typ int }

const (
	poolSize  = 8                     // sockets kept ready per kind
	poolTopUp = 50 * time.Millisecond // after the last dial, the pool is topped up
)

// socket returns a non-blocking, close-on-exec socket of family and typ
// made in the target's network namespace.
func (t *target) socket(family, typ int) (int, error) {
	p, k := &t.sockets, sockKind{family, typ}
	p.mu.Lock()
	p.scheduleTopUp(t)
	if fds := p.ready[k]; len(fds) > 0 {
		fd := fds[len(fds)-1]
		p.ready[k] = fds[:len(fds)-1]
		p.mu.Unlock()
		return fd, nil
	}
	if p.ready == nil {
		p.ready = map[sockKind][]int{}
	}
	if _, ok := p.ready[k]; !ok {
		p.ready[k] = nil // a kind in use: top-ups fill it
	}
	p.mu.Unlock()
	// None ready (the first dial of its kind, or a burst): make a batch
	// now, keep one and pool the rest.
	fds, err := t.makeSockets(k, poolSize)
	if err != nil {
		return -1, err
	}
	p.put(k, fds[1:])
	return fds[0], nil
}

// scheduleTopUp (re)arms the top-up, so that it runs poolTopUp after the
// last dial of a run. p.mu is held.
func (p *socketPool) scheduleTopUp(t *target) {
	if p.done {
		return
	}
	if p.timer != nil && p.timer.Stop() {
		p.timer.Reset(poolTopUp) // it had not run: no second run either
		return
	}
	// None due, or one that is running already: a new one.
	p.fills.Add(1)
	var tm *time.Timer
	tm = time.AfterFunc(poolTopUp, func() {
		defer p.fills.Done()
		p.mu.Lock()
		if p.timer == tm {
			p.timer = nil
		}
		need := map[sockKind]int{}
		for k, fds := range p.ready {
			if n := poolSize - len(fds); n > 0 {
				need[k] = n
			}
		}
		p.mu.Unlock()
		for k, n := range need {
			if fds, err := t.makeSockets(k, n); err == nil {
				p.put(k, fds)
			}
		}
	})
	p.timer = tm
}

// put pools fds, closing those beyond poolSize.
func (p *socketPool) put(k sockKind, fds []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, fd := range fds {
		if p.done || len(p.ready[k]) >= poolSize {
			unix.Close(fd)
			continue
		}
		p.ready[k] = append(p.ready[k], fd)
	}
}

// drain stops the top-ups, waits for one under way and closes the pooled
// sockets. The agent never needs it (its sockets end with it); a test
// that closes the namespace does.
func (p *socketPool) drain() {
	p.mu.Lock()
	p.done = true
	if p.timer != nil && p.timer.Stop() {
		p.fills.Done() // it will not run
		p.timer = nil
	}
	p.mu.Unlock()
	p.fills.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, fds := range p.ready {
		for _, fd := range fds {
			unix.Close(fd)
		}
		delete(p.ready, k)
	}
}

// makeSockets makes up to n sockets of kind k in the target's network
// namespace, in one switch into it; at least one, or the error.
func (t *target) makeSockets(k sockKind, n int) ([]int, error) {
	var fds []int
	err := t.inNetns(func() error {
		for range n {
			fd, err := unix.Socket(k.family, k.typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				if len(fds) > 0 {
					return nil // out of descriptors, say: what was made will do
				}
				return err
			}
			fds = append(fds, fd)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return fds, nil
}
