// Command peerserver is a static Go server for the client-address tests:
// on :PORT (dual-stack) it prints "PEER go <RemoteAddr> <getpeername>"
// for each connection, reads the request and answers "local".
package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"syscall"
)

func peername(c net.Conn) string {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return "error"
	}
	out := "error"
	rc.Control(func(fd uintptr) {
		sa, err := syscall.Getpeername(int(fd))
		if err != nil {
			return
		}
		switch a := sa.(type) {
		case *syscall.SockaddrInet4:
			out = netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
		case *syscall.SockaddrInet6:
			out = netip.AddrPortFrom(netip.AddrFrom16(a.Addr), uint16(a.Port)).String()
		}
	})
	return out
}

func main() {
	ln, err := net.Listen("tcp", ":"+os.Args[1])
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("PEER go", c.RemoteAddr(), peername(c))
		go func() {
			defer c.Close()
			http.ReadRequest(bufio.NewReader(c))
			fmt.Fprint(c, "HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nlocal")
		}()
	}
}
