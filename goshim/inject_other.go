//go:build linux && !amd64 && !arm64

package goshim

import "golang.org/x/sys/unix"

// No system call injection on this architecture: a remote chdir fails
// with EOPNOTSUPP (tracer.go).
type regs struct{}

func getRegs(int, *regs) error      { return unix.EOPNOTSUPP }
func setRegs(int, *regs) error      { return unix.EOPNOTSUPP }
func pcOf(*regs) uint64             { return 0 }
func setSyscall(*regs, int, uint64) {}
func sysResult(*regs) int64         { return 0 }
func setResult(*regs, int64)        {}

var sysInsn []byte
