package goshim

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Kernel structures of seccomp user notification (linux/seccomp.h), which
// golang.org/x/sys does not define.
type seccompData struct {
	Nr                 int32
	Arch               uint32
	InstructionPointer uint64
	Args               [6]uint64
}

type seccompNotif struct {
	ID    uint64
	Pid   uint32 // a thread id, in mirrord's pid namespace
	Flags uint32
	Data  seccompData
}

type seccompNotifResp struct {
	ID    uint64
	Val   int64
	Error int32
	Flags uint32
}

type seccompNotifAddfd struct {
	ID         uint64
	Flags      uint32
	Srcfd      uint32
	Newfd      uint32
	NewfdFlags uint32
}

// SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 5.19): once mirrord has
// received a notification, only a fatal signal interrupts the waiting
// thread. Without it every signal (the Go runtime's preemption signal
// arrives every 10 ms) cancels the notification and restarts the call,
// which a slow remote open would never finish.
const filterFlagWaitKillableRecv = 1 << 5

// buildFilter returns a BPF program that sends the system calls nrs of
// arch to the listener and allows everything else. sendto, when among
// nrs, is sent only when its destination argument is not NULL: sends on
// a connected socket (most of them) run at full speed.
func buildFilter(arch uint32, nrs []int) []unix.SockFilter {
	stmt := func(code uint16, k uint32) unix.SockFilter { return unix.SockFilter{Code: code, K: k} }
	jump := func(code uint16, k uint32, jt, jf uint8) unix.SockFilter {
		return unix.SockFilter{Code: code, K: k, Jt: jt, Jf: jf}
	}
	var table []int
	sendto := false
	for _, nr := range nrs {
		if nr == unix.SYS_SENDTO {
			sendto = true
			continue
		}
		table = append(table, nr)
	}
	prog := []unix.SockFilter{
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, uint32(unsafe.Offsetof(seccompData{}.Arch))),
		// Another ABI (e.g. ia32 on amd64): allowed, it does not see
		// remote files.
		jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, arch, 1, 0),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW),
		stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, uint32(unsafe.Offsetof(seccompData{}.Nr))),
	}
	// What follows the table: the sendto check (5 instructions), then
	// the allow and the notify returns.
	tail := 0
	if sendto {
		tail = 5
	}
	n := len(table)
	for i, nr := range table {
		// Jump to the notify return: n-1-i compares, the tail and the
		// allow lie between.
		prog = append(prog, jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, uint32(nr), uint8(n-1-i+tail+1), 0))
	}
	if sendto {
		dest := uint32(unsafe.Offsetof(seccompData{}.Args)) + 4*8 // sendto's dest_addr
		prog = append(prog,
			jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, unix.SYS_SENDTO, 0, 4), // else: allow
			stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, dest),                   // low word (little-endian)
			jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, 0, 0, 3),               // non-zero: notify
			stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, dest+4),                 // high word
			jump(unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K, 0, 0, 1),               // zero: allow, else notify
		)
	}
	return append(prog,
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_ALLOW),
		stmt(unix.BPF_RET|unix.BPF_K, unix.SECCOMP_RET_USER_NOTIF))
}

// installFilter sets no_new_privs and installs the filter on the calling
// thread, which must be the one that then execs the program. It returns
// the listener fd (close-on-exec).
func installFilter(nrs []int) (int, error) {
	if len(nrs) > 200 {
		return -1, errors.New("too many system calls for one BPF jump table")
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return -1, fmt.Errorf("setting no_new_privs: %w", err)
	}
	prog := buildFilter(auditArch, nrs)
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	flags := uintptr(unix.SECCOMP_FILTER_FLAG_NEW_LISTENER | filterFlagWaitKillableRecv)
	for {
		fd, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
		if errno == unix.EINVAL && flags&filterFlagWaitKillableRecv != 0 {
			flags &^= filterFlagWaitKillableRecv // before Linux 5.19
			continue
		}
		if errno != 0 {
			return -1, fmt.Errorf("installing the sandbox's seccomp filter (remote files, this machine's loopback): %w: %w "+
				"(Linux 5.14 or later is needed)", errno, ErrSeccomp)
		}
		unix.CloseOnExec(int(fd))
		return int(fd), nil
	}
}

func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
	if errno != 0 {
		return r, errno
	}
	return r, nil
}

// notifRecv receives one notification (blocking).
func notifRecv(listener int, n *seccompNotif) error {
	*n = seccompNotif{} // the kernel wants it zeroed
	_, err := ioctlPtr(listener, unix.SECCOMP_IOCTL_NOTIF_RECV, unsafe.Pointer(n))
	return err
}

// notifValid reports whether the notification id is still pending: the
// thread has not been interrupted or died, so its thread id still names
// it and what was read from its memory belongs to this call.
func notifValid(listener int, id uint64) bool {
	_, err := ioctlPtr(listener, unix.SECCOMP_IOCTL_NOTIF_ID_VALID, unsafe.Pointer(&id))
	return err == nil
}

// notifSend answers a notification. ENOENT (the call was interrupted and
// will be restarted, or the thread died) is not an error for us.
func notifSend(listener int, r *seccompNotifResp) error {
	_, err := ioctlPtr(listener, unix.SECCOMP_IOCTL_NOTIF_SEND, unsafe.Pointer(r))
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	return err
}

// notifAddFD installs fd in the thread's process. With send, the system
// call returns the new fd number atomically (Linux 5.14).
func notifAddFD(listener int, id uint64, fd int, cloexec, send bool) (int, error) {
	a := seccompNotifAddfd{ID: id, Srcfd: uint32(fd)}
	if send {
		a.Flags = unix.SECCOMP_ADDFD_FLAG_SEND
	}
	if cloexec {
		a.NewfdFlags = unix.O_CLOEXEC
	}
	r, err := ioctlPtr(listener, unix.SECCOMP_IOCTL_NOTIF_ADDFD, unsafe.Pointer(&a))
	return int(r), err
}
