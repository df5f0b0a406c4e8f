// Command goclient is built with CGO_ENABLED=0 (a static Go binary, which
// LD_PRELOAD cannot reach) and exercises what mirrord must give it: it
// resolves a name, talks TCP and UDP to it, and prints an env variable.
package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: goclient HOST")
		os.Exit(2)
	}
	host := os.Args[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		fmt.Println("dns error", err)
		os.Exit(1)
	}
	fmt.Println("dns", addrs[0])
	// A record type other than A/AAAA: the agent forwards whole answers.
	if txt, err := net.DefaultResolver.LookupTXT(ctx, host); err == nil && len(txt) > 0 {
		fmt.Println("txt", txt[0])
	} else {
		fmt.Println("txt error", err)
	}

	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, "8080") + "/")
	if err != nil {
		fmt.Println("tcp error", err)
		os.Exit(1)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Printf("tcp %s\n", body)
	// The program's own end of a connection: this machine's address for a
	// connection made from this machine, the sandbox's for one through it.
	if tc, err := net.DialTimeout("tcp", net.JoinHostPort(host, "8080"), 5*time.Second); err == nil {
		fmt.Printf("tcp from %s\n", tc.LocalAddr().(*net.TCPAddr).IP)
		tc.Close()
	}

	u, err := net.Dial("udp", net.JoinHostPort(host, "9000"))
	if err != nil {
		fmt.Println("udp error", err)
		os.Exit(1)
	}
	u.SetDeadline(time.Now().Add(5 * time.Second))
	u.Write([]byte("ping"))
	buf := make([]byte, 100)
	n, err := u.Read(buf)
	if err != nil {
		fmt.Println("udp error", err)
		os.Exit(1)
	}
	fmt.Printf("udp %s\n", buf[:n])
	fmt.Printf("udp from %s\n", u.LocalAddr().(*net.UDPAddr).IP)
	fmt.Printf("env %s\n", os.Getenv("SECRET_TOKEN"))
	hostname, _ := os.Hostname()
	fmt.Printf("hostname %s\n", hostname)
}
