package agent

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/mirrord-go/mirrord/protocol"
)

// target is the process whose namespaces the agent works in. A zero pid
// means targetless: the agent's own namespaces.
type target struct {
	pid   int
	netns *os.File // /proc/<pid>/ns/net, held open so the namespace cannot be swapped under us
	utsns *os.File

	sockets socketPool // sockets made in netns, ready for dials (sockpool.go)
}

func openTarget(pid int) (*target, error) {
	t := &target{pid: pid}
	if pid == 0 {
		return t, nil
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return nil, fmt.Errorf("target pid %d: no such process", pid)
	}
	var err error
	if t.netns, err = openNamespace(pid, "net"); err != nil {
		return nil, fmt.Errorf("target pid %d: cannot open its network namespace (the agent needs root or CAP_SYS_PTRACE): %w", pid, err)
	}
	if t.utsns, err = openNamespace(pid, "uts"); err != nil {
		if t.netns != nil {
			t.netns.Close()
		}
		return nil, fmt.Errorf("target pid %d: cannot open its UTS namespace: %w", pid, err)
	}
	return t, nil
}

// openNamespace opens the namespace of kind name ("net", "uts") of pid,
// or returns nil when the agent is in it already: an agent in the target's
// pod (an ephemeral container shares the pod's network and UTS
// namespaces) then works where it is, without setns, which would need
// CAP_SYS_ADMIN for nothing.
func openNamespace(pid int, name string) (*os.File, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, name))
	if err != nil {
		return nil, err
	}
	var theirs, ours unix.Stat_t
	if unix.Fstat(int(f.Fd()), &theirs) == nil && unix.Stat("/proc/self/ns/"+name, &ours) == nil &&
		theirs.Dev == ours.Dev && theirs.Ino == ours.Ino {
		f.Close()
		return nil, nil
	}
	return f, nil
}

func (t *target) Close() {
	if t.netns != nil {
		t.netns.Close()
	}
	if t.utsns != nil {
		t.utsns.Close()
	}
}

// root is the target's file system root as seen from the agent.
func (t *target) root() string {
	if t.pid == 0 {
		return "/"
	}
	return fmt.Sprintf("/proc/%d/root/", t.pid)
}

// inNetns runs fn with the calling thread in the target's network
// namespace. Sockets created by fn stay in that namespace after it returns,
// and may be used from any goroutine.
func (t *target) inNetns(fn func() error) error {
	if t.netns == nil {
		return fn()
	}
	return inNamespace(t.netns, unix.CLONE_NEWNET, "net", fn)
}

// inNamespace runs fn on a fresh goroutine locked to its OS thread, with
// that thread switched into the namespace ns. setns affects only the
// calling thread, so the rest of the agent stays where it is. If the thread
// cannot be switched back, it is left locked, and Go destroys it when the
// goroutine ends instead of reusing it elsewhere.
func inNamespace(ns *os.File, nstype int, name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/" + name)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open own %s namespace: %w", name, err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(ns.Fd()), nstype); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter the target's %s namespace: %w", name, err)
			return
		}
		ferr := fn()
		if unix.Setns(int(orig.Fd()), nstype) == nil {
			runtime.UnlockOSThread()
		}
		errc <- ferr
	}()
	return <-errc
}

// env reads the target's environment.
func (t *target) env() (map[string]string, error) {
	if t.pid == 0 {
		return map[string]string{}, nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", t.pid))
	if err != nil {
		return nil, fmt.Errorf("read the target's environment: %w", err)
	}
	env := map[string]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if len(kv) == 0 {
			continue
		}
		k, v, _ := strings.Cut(string(kv), "=")
		env[k] = v
	}
	return env, nil
}

// hostname is the target's UTS hostname.
func (t *target) hostname() (string, error) {
	get := func() (string, error) {
		var u unix.Utsname
		if err := unix.Uname(&u); err != nil {
			return "", err
		}
		return unix.ByteSliceToString(u.Nodename[:]), nil
	}
	if t.utsns == nil {
		return get()
	}
	var name string
	err := inNamespace(t.utsns, unix.CLONE_NEWUTS, "uts", func() error {
		var err error
		name, err = get()
		return err
	})
	return name, err
}

// resolver reads the target's /etc/resolv.conf.
func (t *target) resolver() (*dns.ClientConfig, error) {
	path := t.root() + "etc/resolv.conf"
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the target's resolver configuration %s: %w", path, err)
	}
	if len(cfg.Servers) == 0 {
		return nil, errors.New("the target's resolv.conf names no nameserver")
	}
	return cfg, nil
}

func resolverInfo(cfg *dns.ClientConfig) protocol.Resolver {
	if cfg == nil {
		return protocol.Resolver{}
	}
	servers := make([]string, len(cfg.Servers))
	for i, s := range cfg.Servers {
		servers[i] = joinHostPort(s, cfg.Port)
	}
	return protocol.Resolver{Servers: servers, Search: cfg.Search, Ndots: cfg.Ndots}
}

func joinHostPort(host, port string) string {
	if strings.Contains(host, ":") {
		return "[" + host + "]:" + port
	}
	return host + ":" + port
}

// errorCode names the errno behind err, so the local side can reproduce it.
func errorCode(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	if os.IsTimeout(err) {
		return "ETIMEDOUT"
	}
	return ""
}

// exited returns a channel closed when the target process has ended; nil
// (never closed) when targetless.
func (t *target) exited() <-chan struct{} {
	if t.pid == 0 {
		return nil
	}
	ch := make(chan struct{})
	go func() {
		defer close(ch)
		// A pidfd becomes readable when the process ends; kernels
		// before 5.3 have none, and are polled instead.
		if fd, err := unix.PidfdOpen(t.pid, 0); err == nil {
			defer unix.Close(fd)
			for {
				_, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, -1)
				if err != unix.EINTR {
					return
				}
			}
		}
		for unix.Kill(t.pid, 0) != unix.ESRCH {
			time.Sleep(time.Second)
		}
	}()
	return ch
}
