package agent

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// dialUnix connects to the unix stream socket at path in the target's
// file system (feature.network.outgoing.unix_streams). The path is
// resolved as the file operations resolve theirs (openInRoot: symlinks in
// the container resolve inside it, ".." cannot climb out), and the socket
// is then reached through the /proc/self/fd link of that O_PATH
// descriptor, which connect(2) follows to the very file found. The link
// is also short, whatever the path: /proc/<pid>/root/ followed by the
// path may not fit in the 108 bytes of sun_path.
//
// Errors are the target's, as upstream's agent gives them: ENOENT when
// nothing is at path, ECONNREFUSED when what is there is not a listening
// socket, EACCES, ... The program gets the same errno from its connect.
func (t *target) dialUnix(path string) (net.Conn, error) {
	fd, err := t.openInRoot(path, unix.O_PATH, 0)
	if err != nil {
		return nil, unixDialError(path, err)
	}
	defer unix.Close(fd)
	d := net.Dialer{Timeout: 20 * time.Second}
	conn, err := d.Dial("unix", "/proc/self/fd/"+strconv.Itoa(fd))
	if err != nil {
		return nil, unixDialError(path, err)
	}
	return conn, nil
}

// unixDialError names the target's path rather than the /proc link, and
// keeps the errno for errorCode.
func unixDialError(path string, err error) error {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return fmt.Errorf("connect to %s in the target: %w", path, errno)
	}
	return fmt.Errorf("connect to %s in the target: %w", path, err)
}
