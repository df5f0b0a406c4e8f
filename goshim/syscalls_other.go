//go:build linux && !amd64 && !arm64

package goshim

// auditArch 0: remote files are not supported on this architecture.
const auditArch = 0

var syscallsArch = map[int]sysCall{}
