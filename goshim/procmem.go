package goshim

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Access to a stopped thread's memory with process_vm_readv/writev: one
// system call each, where /proc/<tid>/mem takes three (open, pread,
// close). Both are allowed by the same ptrace check, which mirrord passes:
// it created the sandbox's user namespace, so it has every capability in
// it, and the program is its descendant (Yama's ptrace_scope 1).

const pageSize = 4096

// readPath reads the NUL-terminated path at addr in thread tid, at most
// PATH_MAX bytes (longer paths fail with ENAMETOOLONG, like the kernel's).
func readPath(tid int, addr uint64) (string, error) {
	if addr == 0 {
		return "", unix.EFAULT
	}
	var buf [unix.PathMax]byte
	got := 0
	for got < len(buf) {
		// Read up to the end of the page: the next one may be unmapped.
		n := min(pageSize-int((addr+uint64(got))%pageSize), len(buf)-got)
		r, err := readMem(tid, addr+uint64(got), buf[got:got+n])
		if err != nil {
			return "", err
		}
		if i := bytes.IndexByte(buf[got:got+r], 0); i >= 0 {
			return string(buf[:got+i]), nil
		}
		got += r
	}
	return "", unix.ENAMETOOLONG
}

func readMem(tid int, addr uint64, b []byte) (int, error) {
	local := []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	n, err := unix.ProcessVMReadv(tid, local, remote, 0)
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, unix.EFAULT
	}
	return n, nil
}

// writeMem writes b at addr in thread tid.
func writeMem(tid int, addr uint64, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	local := []unix.Iovec{{Base: &b[0], Len: uint64(len(b))}}
	remote := []unix.RemoteIovec{{Base: uintptr(addr), Len: len(b)}}
	n, err := unix.ProcessVMWritev(tid, local, remote, 0)
	if err != nil {
		return err
	}
	if n != len(b) {
		return unix.EFAULT
	}
	return nil
}

// bytesOf returns the memory of *v.
func bytesOf[T any](v *T) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(v)), unsafe.Sizeof(*v))
}

// threadUmask reads the umask of thread tid (the mode bits a create in
// its name must clear); 022 if the kernel does not say.
func threadUmask(tid int) uint32 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(tid) + "/status")
	if err != nil {
		return 0o022
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Umask:"); ok {
			if m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32); err == nil {
				return uint32(m)
			}
		}
	}
	return 0o022
}
