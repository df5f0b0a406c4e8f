package main

import (
	"fmt"
	"syscall"
	"unsafe"
)

// utimeCall makes one of amd64's legacy time-setting system calls (arm64
// has only utimensat): Go's syscall package calls them directly, as static
// C programs built against old libcs do.
func utimeCall(call, path string, sec int64) error {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return err
	}
	tv := [2]syscall.Timeval{{Sec: sec}, {Sec: sec}}
	var errno syscall.Errno
	switch call {
	case "utime":
		buf := syscall.Utimbuf{Actime: sec, Modtime: sec}
		_, _, errno = syscall.Syscall(syscall.SYS_UTIME, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&buf)), 0)
	case "utimes":
		_, _, errno = syscall.Syscall(syscall.SYS_UTIMES, uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&tv)), 0)
	case "futimesat":
		dirfd := -100 // AT_FDCWD
		_, _, errno = syscall.Syscall(syscall.SYS_FUTIMESAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&tv)))
	default:
		return fmt.Errorf("unknown call %q", call)
	}
	if errno != 0 {
		return errno
	}
	return nil
}
