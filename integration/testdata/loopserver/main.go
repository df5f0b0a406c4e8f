// Command loopserver is a static Go server for the loopback tests: it
// listens where it is told, says so on stdout, and answers HTTP:
//
//	/           "hello from loopserver"
//	/env?k=K    the value of variable K
//	/get?url=U  the body of a GET of U (a service on this machine, or in the pod)
//	/udp?addr=A the answer to a "ping" datagram sent to A
//
// With a second address it also echoes UDP datagrams there ("echo:" + data).
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: loopserver TCP-ADDR [UDP-ADDR]")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		fmt.Println("listen error:", err)
		os.Exit(1)
	}
	if len(os.Args) > 2 {
		pc, err := net.ListenPacket("udp", os.Args[2])
		if err != nil {
			fmt.Println("listen error:", err)
			os.Exit(1)
		}
		fmt.Println("udp", pc.LocalAddr())
		go func() {
			buf := make([]byte, 65535)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				pc.WriteTo(append([]byte("echo:"), buf[:n]...), from)
			}
		}()
	}
	fmt.Println("listening", ln.Addr())
	client := http.Client{Timeout: 5 * time.Second}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello from loopserver") })
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, os.Getenv(r.FormValue("k"))) })
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		resp, err := client.Get(r.FormValue("url"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	})
	mux.HandleFunc("/udp", func(w http.ResponseWriter, r *http.Request) {
		c, err := net.Dial("udp", r.FormValue("addr"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write([]byte("ping"))
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		w.Write(buf[:n])
	})
	http.Serve(ln, mux)
}
