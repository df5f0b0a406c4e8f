// Command loopbench measures loopback traffic for `make bench`:
//
//	sink ADDR          listen on ADDR, print "listening ADDR"; per connection,
//	                   count the bytes until EOF and answer with the count
//	bulk ADDR BYTES    send BYTES to a sink, print MB/s (10^6 bytes/s)
//	lat ADDR N         N connections to a sink, each sending one byte and
//	                   waiting for the answer; print the median in µs
package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: loopbench sink ADDR | bulk ADDR BYTES | lat ADDR N")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "sink":
		err = sink(os.Args[2])
	case "bulk":
		err = bulk(os.Args[2], arg(3))
	case "lat":
		err = lat(os.Args[2], int(arg(3)))
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func arg(i int) int64 {
	if len(os.Args) <= i {
		fmt.Fprintln(os.Stderr, "missing argument")
		os.Exit(2)
	}
	n, err := strconv.ParseInt(os.Args[i], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	return n
}

func sink(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Println("listening", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			io.WriteString(c, strconv.FormatInt(n, 10))
		}()
	}
}

// send sends n bytes on a new connection and checks the sink's count.
func send(addr string, buf []byte, n int64) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	for sent := int64(0); sent < n; {
		chunk := min(int64(len(buf)), n-sent)
		if _, err := c.Write(buf[:chunk]); err != nil {
			return err
		}
		sent += chunk
	}
	c.(*net.TCPConn).CloseWrite()
	ack, err := io.ReadAll(c)
	if err != nil || string(ack) != strconv.FormatInt(n, 10) {
		return fmt.Errorf("sink confirmed %q, %v", ack, err)
	}
	return nil
}

func bulk(addr string, n int64) error {
	start := time.Now()
	if err := send(addr, make([]byte, 256<<10), n); err != nil {
		return err
	}
	fmt.Printf("%.1f\n", float64(n)/time.Since(start).Seconds()/1e6)
	return nil
}

func lat(addr string, n int) error {
	ds := make([]float64, n)
	one := []byte{'x'}
	for i := range ds {
		start := time.Now()
		if err := send(addr, one, 1); err != nil {
			return err
		}
		ds[i] = float64(time.Since(start).Nanoseconds()) / 1e3
	}
	slices.Sort(ds)
	fmt.Printf("%.1f\n", ds[n/2])
	return nil
}
