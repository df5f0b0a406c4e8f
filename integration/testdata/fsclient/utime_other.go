//go:build !amd64

package main

import "syscall"

// utimeCall: only amd64 has the legacy time-setting system calls.
func utimeCall(string, string, int64) error { return syscall.ENOSYS }
