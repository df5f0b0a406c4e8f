package agent

import (
	"sync"

	"golang.org/x/sys/unix"
)

// socketPool keeps a few sockets made in the target's network namespace
// ready for the agent's dials. A socket keeps the namespace it was made
// in, and making one there takes a thread switched into the namespace and
// back (inNetns): measured at ≈70 µs of the ≈100 µs an outgoing connect
// took in the agent, on 2 cores. A batch pays that switch once for
// poolBatch sockets, and the pool refills in the background before it
// runs dry, so a dial finds its socket waiting. Unbound, unconnected
// sockets cost the kernel a little memory and the agent a descriptor each.
type socketPool struct {
	mu      sync.Mutex
	ready   map[sockKind][]int
	filling map[sockKind]bool
	fills   sync.WaitGroup
}

type sockKind struct{ family, typ int }

const (
	poolBatch = 8 // sockets made per switch into the namespace
	poolLow   = 4 // the pool refills when it has fewer ready
)

// socket returns a non-blocking, close-on-exec socket of family and typ
// made in the target's network namespace.
func (t *target) socket(family, typ int) (int, error) {
	p, k := &t.sockets, sockKind{family, typ}
	p.mu.Lock()
	if fds := p.ready[k]; len(fds) > 0 {
		fd := fds[len(fds)-1]
		p.ready[k] = fds[:len(fds)-1]
		if len(fds)-1 < poolLow && !p.filling[k] {
			p.startFill(t, k)
		}
		p.mu.Unlock()
		return fd, nil
	}
	p.mu.Unlock()
	// None ready (the first dial of its kind, or a burst): make a batch
	// now, keep one and pool the rest.
	fds, err := t.makeSockets(k, poolBatch)
	if err != nil {
		return -1, err
	}
	p.put(k, fds[1:])
	return fds[0], nil
}

// startFill refills kind k's pool on a goroutine of its own. p.mu is held.
func (p *socketPool) startFill(t *target, k sockKind) {
	if p.filling == nil {
		p.filling = map[sockKind]bool{}
	}
	p.filling[k] = true
	p.fills.Go(func() {
		fds, _ := t.makeSockets(k, poolBatch)
		p.mu.Lock()
		p.filling[k] = false
		p.mu.Unlock()
		p.put(k, fds)
	})
}

// drain waits for the refills under way and closes the pooled sockets.
// The agent never needs it (its sockets end with it); a test that closes
// the namespace does.
func (p *socketPool) drain() {
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

// put pools fds, closing those beyond two batches.
func (p *socketPool) put(k sockKind, fds []int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready == nil {
		p.ready = map[sockKind][]int{}
	}
	for _, fd := range fds {
		if len(p.ready[k]) >= 2*poolBatch {
			unix.Close(fd)
			continue
		}
		p.ready[k] = append(p.ready[k], fd)
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
