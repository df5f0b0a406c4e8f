package goshim

import "golang.org/x/sys/unix"

// The registers of a stopped thread, and how to make it run one system
// call again at the instruction it last entered the kernel with (see
// tracer.go).
type regs = unix.PtraceRegs

func getRegs(tid int, r *regs) error { return unix.PtraceGetRegs(tid, r) }
func setRegs(tid int, r *regs) error { return unix.PtraceSetRegs(tid, r) }

// sysInsn is `syscall` (0f 05), just before the program counter after a
// system call.
var sysInsn = []byte{0x0f, 0x05}

func pcOf(r *regs) uint64 { return r.Rip }

// setSyscall points r at the system call instruction again with nr and
// its one argument. orig_rax -1 keeps the kernel's restart logic away.
func setSyscall(r *regs, nr int, arg uint64) {
	r.Rip -= uint64(len(sysInsn))
	r.Rax, r.Orig_rax, r.Rdi = uint64(nr), ^uint64(0), arg
}

func sysResult(r *regs) int64    { return int64(r.Rax) }
func setResult(r *regs, v int64) { r.Rax = uint64(v) }
