// Command connhops is the floor under mirrord's outgoing connect: the
// same hops with nothing else in them, for the benchmark to set beside
// mirrord's connect latency. A program's socket goes with a one-line
// request over a unix socket to a proxy; the proxy asks an agent over one
// open TCP connection on loopback; the agent connects a socket of the
// pod's network namespace to the destination and answers; the proxy then
// connects the program's socket to its loopback relay listener, takes
// that connection, and answers the program. No multiplexing, no relaying
// of bytes, no checks.
//
//	connhops agent NETNS      listens on loopback, prints its address
//	connhops proxy AGENT SOCK serves the unix socket SOCK, prints "ready"
package main

import (
	"bufio"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: connhops agent NETNS | connhops proxy AGENT SOCK")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "agent":
		err = agent(os.Args[2])
	case "proxy":
		err = proxy(os.Args[2], os.Args[3])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// agent serves one proxy: each request line "host:port" is answered "Y"
// once a socket of the namespace at netns is connected there, or "E
// errno". A connection stays open until the next request.
func agent(netns string) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println(ln.Addr())
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	ns, err := os.Open(netns)
	if err != nil {
		return err
	}
	// This goroutine's thread makes every socket, in the namespace.
	runtime.LockOSThread()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	last := -1
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil
		}
		if last >= 0 {
			unix.Close(last)
			last = -1
		}
		ap, err := netip.ParseAddrPort(strings.TrimSpace(line))
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			err = unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())})
		}
		reply := "Y\n"
		if err != nil {
			reply = "E " + strconv.Itoa(int(err.(unix.Errno))) + "\n"
		}
		last = fd
		if _, err := c.Write([]byte(reply)); err != nil {
			return nil
		}
	}
}

// proxy serves program requests ("C\ttcp\tHOST\tPORT\n" with the
// program's socket) on the unix socket sock, asking the agent at
// agentAddr.
func proxy(agentAddr, sock string) error {
	ac, err := net.Dial("tcp", agentAddr)
	if err != nil {
		return err
	}
	ar := bufio.NewReader(ac)
	rl, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	relay := &unix.SockaddrInet4{Port: rl.Addr().(*net.TCPAddr).Port, Addr: [4]byte{127, 0, 0, 1}}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return err
	}
	fmt.Println("ready")
	var held net.Conn // the relay's end of the last connection
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			return err
		}
		buf, oob := make([]byte, 512), make([]byte, unix.CmsgSpace(4))
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 {
			c.Close()
			continue
		}
		fds, _ := unix.ParseUnixRights(&msgs[0])
		f := strings.Split(strings.TrimSpace(string(buf[:n])), "\t")
		reply := "E 22"
		if len(fds) == 1 && len(f) == 4 {
			ac.Write([]byte(net.JoinHostPort(f[2], f[3]) + "\n"))
			reply, _ = ar.ReadString('\n')
			reply = strings.TrimSpace(reply)
			if reply == "Y" {
				if err := unix.Connect(fds[0], relay); err != nil && err != unix.EINPROGRESS {
					reply = "E " + strconv.Itoa(int(err.(unix.Errno)))
				} else if rc, err := rl.Accept(); err == nil {
					if held != nil {
						held.Close()
					}
					held = rc
				}
			}
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		c.Write([]byte(reply + "\n"))
		c.Close()
	}
}
