// Command unixclient is built with CGO_ENABLED=0 (a static Go binary, so
// mirrord runs it in the netstack sandbox) and talks to unix stream
// sockets: for each path it connects, sends "hi\n" and reads one line,
// printing "PATH peer REMOTEADDR reply LINE", or "PATH error ERRNO".
package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	for _, path := range os.Args[1:] {
		c, err := net.DialTimeout("unix", path, 10*time.Second)
		if err != nil {
			var errno unix.Errno
			if errors.As(err, &errno) {
				fmt.Println(path, "error", unix.ErrnoName(errno))
			} else {
				fmt.Println(path, "error", err)
			}
			continue
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprint(c, "hi\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			fmt.Println(path, "error", err)
		} else {
			fmt.Println(path, "peer", c.RemoteAddr(), "reply", strings.TrimSpace(line))
		}
		c.Close()
	}
}
