// Command bulk measures TCP throughput: it sends BYTES to a sink at ADDR,
// half-closes, waits for the sink to confirm it read everything, and prints
// the rate in MB/s (10^6 bytes per second). With FROM it binds the
// connection to that local address first.
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) != 3 && len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: bulk ADDR BYTES [FROM]")
		os.Exit(2)
	}
	n, err := strconv.ParseInt(os.Args[2], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	start := time.Now()
	var d net.Dialer
	if len(os.Args) == 4 {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(os.Args[3])}
	}
	c, err := d.Dial("tcp", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	buf := make([]byte, 256<<10)
	for sent := int64(0); sent < n; {
		chunk := min(int64(len(buf)), n-sent)
		if _, err := c.Write(buf[:chunk]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		sent += chunk
	}
	c.(*net.TCPConn).CloseWrite()
	ack, err := io.ReadAll(c)
	if err != nil || string(ack) != strconv.FormatInt(n, 10) {
		fmt.Fprintf(os.Stderr, "sink confirmed %q, %v\n", ack, err)
		os.Exit(1)
	}
	secs := time.Since(start).Seconds()
	fmt.Printf("%.1f\n", float64(n)/secs/1e6)
}
