package goshim

import "golang.org/x/sys/unix"

// The registers of a stopped thread, and how to make it run one system
// call again at the instruction it last entered the kernel with (see
// tracer.go). arm64 has no PTRACE_GETREGS: the NT_PRSTATUS register set.
type regs = unix.PtraceRegsArm64

const ntPrstatus = 1

func getRegs(tid int, r *regs) error { return unix.PtraceGetRegSetArm64(tid, ntPrstatus, r) }
func setRegs(tid int, r *regs) error { return unix.PtraceSetRegSetArm64(tid, ntPrstatus, r) }

// sysInsn is `svc #0` (little-endian d4000001), just before the program
// counter after a system call.
var sysInsn = []byte{0x01, 0x00, 0x00, 0xd4}

func pcOf(r *regs) uint64 { return r.Pc }

// setSyscall points r at the system call instruction again with nr (x8)
// and its one argument (x0).
func setSyscall(r *regs, nr int, arg uint64) {
	r.Pc -= uint64(len(sysInsn))
	r.Regs[8], r.Regs[0] = uint64(nr), arg
}

func sysResult(r *regs) int64    { return int64(r.Regs[0]) }
func setResult(r *regs, v int64) { r.Regs[0] = uint64(v) }
