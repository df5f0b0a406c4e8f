// Command fsclient is built with CGO_ENABLED=0 (a static Go binary: no libc
// for LD_PRELOAD to hook) and runs the file operations given as arguments,
// one per argument ("read PATH", "write PATH TEXT", ...), printing one line
// "OP: RESULT" per operation, or "OP: error ERRNO" (e.g. "error ENOENT").
package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	for _, op := range os.Args[1:] {
		res, err := run(strings.SplitN(op, " ", 3))
		if err != nil {
			var errno syscall.Errno
			if errors.As(err, &errno) {
				res = "error " + errnoName(errno)
			} else {
				res = "error " + err.Error()
			}
		}
		fmt.Printf("%s: %s\n", op, res)
	}
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.EXDEV:
		return "EXDEV"
	case syscall.EACCES:
		return "EACCES"
	case syscall.EEXIST:
		return "EEXIST"
	case syscall.ENOTDIR:
		return "ENOTDIR"
	case syscall.ENOSYS:
		return "ENOSYS"
	}
	return fmt.Sprintf("errno %d (%v)", int(e), e)
}

func run(f []string) (string, error) {
	arg := func(i int) string {
		if i < len(f) {
			return f[i]
		}
		return ""
	}
	switch f[0] {
	case "read":
		b, err := os.ReadFile(arg(1))
		return string(b), err
	case "stat", "lstat":
		stat := os.Stat
		if f[0] == "lstat" {
			stat = os.Lstat
		}
		fi, err := stat(arg(1))
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("size=%d dir=%t link=%t", fi.Size(), fi.IsDir(), fi.Mode()&os.ModeSymlink != 0), nil
	case "ls":
		es, err := os.ReadDir(arg(1))
		var names []string
		for _, e := range es {
			names = append(names, e.Name())
		}
		slices.Sort(names)
		return strings.Join(names, ","), err
	case "readlink":
		return os.Readlink(arg(1))
	case "write":
		return "ok", os.WriteFile(arg(1), []byte(arg(2)), 0o644)
	case "mkdir":
		return "ok", os.Mkdir(arg(1), 0o755)
	case "rename":
		return "ok", os.Rename(arg(1), arg(2))
	case "rm":
		return "ok", os.Remove(arg(1))
	case "cd":
		return "ok", os.Chdir(arg(1))
	case "pwd": // os.Getwd: $PWD when it is ".", else the getcwd system call
		return os.Getwd()
	case "getcwd": // the system call itself
		return syscall.Getwd()
	case "mtime": // the file's mtime, in seconds
		fi, err := os.Stat(arg(1))
		if err != nil {
			return "", err
		}
		return strconv.FormatInt(fi.ModTime().Unix(), 10), nil
	case "utime", "utimes", "futimesat": // the legacy amd64 system calls, mtime = atime = arg 2
		var sec int64
		fmt.Sscan(arg(2), &sec)
		return "ok", utimeCall(f[0], arg(1), sec)
	case "sha": // sha256 of a file, read in 32 KiB pieces, and the time taken
		start := time.Now()
		fh, err := os.Open(arg(1))
		if err != nil {
			return "", err
		}
		defer fh.Close()
		h := sha256.New()
		n, err := io.Copy(h, fh)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%s %d bytes in %v", hex.EncodeToString(h.Sum(nil)), n, time.Since(start).Round(time.Millisecond)), nil
	case "openloop": // N opens of a local file, to time the layer per open
		var n int
		fmt.Sscan(arg(2), &n)
		start := time.Now()
		for i := 0; i < n; i++ {
			fd, err := syscall.Open(arg(1), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
			if err != nil {
				return "", err
			}
			syscall.Close(fd)
		}
		return fmt.Sprintf("%.2f us/open", float64(time.Since(start).Nanoseconds())/float64(n)/1e3), nil
	}
	return "", fmt.Errorf("unknown op %q", f[0])
}
