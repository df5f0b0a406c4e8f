package intproxy

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mirrord-go/mirrord/protocol"
	"github.com/mirrord-go/mirrord/relay"
)

// Unix stream sockets of the target (feature.network.outgoing.unix_streams).
//
// A program that connects a stream socket to a path matching one of the
// patterns reaches the socket at that path in the target: the agent
// connects to it there, and the program's socket is connected to a
// one-shot listener of this proxy that relays to the agent's connection.
// Both engines connect the program's own socket to that listener (the
// preload's connect hook, the netstack engine's supervisor), so the
// program keeps a real connected AF_UNIX stream socket: poll, recvmsg,
// shutdown and the rest behave as the kernel has them. Bytes cross;
// what a unix socket carries beside bytes (descriptors, credentials)
// cannot cross to another machine.

// unixMatcher matches unix socket paths against the unix_streams
// patterns. As upstream does, a pattern matches anywhere in the path (use
// ^ and $ to anchor it), and bytes that are not UTF-8 are matched as the
// replacement character. Only absolute paths match: a relative path is
// relative to the program's directory on this machine, which means
// nothing in the target.
type unixMatcher []*regexp.Regexp

func newUnixMatcher(patterns []string) (unixMatcher, error) {
	m := make(unixMatcher, 0, len(patterns))
	for _, p := range patterns {
		re, err := regexp.Compile(p)
		if err != nil {
			return nil, fmt.Errorf("feature.network.outgoing.unix_streams: invalid regex %q: %w", p, err)
		}
		m = append(m, re)
	}
	return m, nil
}

func (m unixMatcher) match(path string) bool {
	if !strings.HasPrefix(path, "/") {
		return false
	}
	path = strings.ToValidUTF8(path, "\uFFFD")
	for _, re := range m {
		if re.MatchString(path) {
			return true
		}
	}
	return false
}

// UnixRemote says whether a connection to the unix socket at path goes to
// the target's socket at that path.
func (p *Proxy) UnixRemote(path string) bool { return p.unix.match(path) }

// HasUnixStreams says whether any unix socket path goes to the target:
// without patterns, the engines need not ask about each connect.
func (p *Proxy) HasUnixStreams() bool { return len(p.unix) > 0 }

// DialRemoteUnix connects to the unix stream socket at path in the
// target, whatever the patterns say.
func (p *Proxy) DialRemoteUnix(ctx context.Context, path string) (net.Conn, error) {
	return p.dialRemote(ctx, &protocol.DialRequest{Network: protocol.NetworkUnix, Addr: path})
}

// RelayUnix, for a program connecting a stream socket to path, returns
// the path of a listener of this proxy to connect that socket to instead,
// or "" when path stays local. The target's socket is dialed first, so
// the program's connect fails as it would in the target (ENOENT,
// ECONNREFUSED, ...: the error's Errno). The listener takes one
// connection, within relayAcceptTimeout.
func (p *Proxy) RelayUnix(ctx context.Context, path string) (string, error) {
	if !p.UnixRemote(path) {
		return "", nil
	}
	remote, err := p.DialRemoteUnix(ctx, path)
	if err != nil {
		// The errno itself in the chain, for the supervisor (which
		// reads a syscall.Errno) as much as for the layer protocol.
		return "", fmt.Errorf("%w: %v", Errno(err), err)
	}
	ln, err := p.relays.listen()
	if err != nil {
		remote.Close()
		return "", err
	}
	go func() {
		defer remote.Close()
		ln.SetDeadline(time.Now().Add(relayAcceptTimeout))
		c, err := ln.Accept()
		ln.Close() // and unlinks the socket file
		if err != nil {
			return
		}
		defer c.Close()
		relay.Splice(c, remote)
	}()
	return ln.Addr().String(), nil
}

// relayAcceptTimeout bounds the wait for the program's connect after a
// relay was set up for it (it comes right after, unless the program died).
const relayAcceptTimeout = 30 * time.Second

// relayDir holds the proxy's one-shot listeners: a directory of its own,
// mode 0700, so that only this user can connect to them (an abstract
// socket would be open to every user of the machine).
type relayDir struct {
	mu  sync.Mutex
	dir string
	n   int
}

// maxSunPath is the longest path a sockaddr_un holds (108 bytes with the
// NUL).
const maxSunPath = 107

func (r *relayDir) listen() (*net.UnixListener, error) {
	r.mu.Lock()
	if r.dir == "" {
		dir, err := os.MkdirTemp("", "mirrord-unix-")
		if err == nil && len(dir)+12 > maxSunPath {
			// A long TMPDIR leaves no room for the socket's name.
			os.Remove(dir)
			dir, err = os.MkdirTemp("/tmp", "mirrord-unix-")
		}
		if err != nil {
			r.mu.Unlock()
			return nil, fmt.Errorf("a directory for unix socket relays: %w", err)
		}
		r.dir = dir
	}
	r.n++
	path := filepath.Join(r.dir, strconv.Itoa(r.n))
	r.mu.Unlock()
	return net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
}

func (r *relayDir) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dir != "" {
		os.RemoveAll(r.dir)
		r.dir = ""
	}
}
