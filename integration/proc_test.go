package integration

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// procInfo is what the tests read of a process in /proc/PID/stat.
type procInfo struct {
	comm string
	ppid int
	cpu  time.Duration // user and system time used so far
}

// readProc reads /proc/PID/stat; false if the process is gone.
func readProc(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parens.
	s := string(b)
	open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if open < 0 || end < open {
		return procInfo{}, false
	}
	f := strings.Fields(s[end+1:])
	if len(f) < 13 {
		return procInfo{}, false
	}
	ppid, _ := strconv.Atoi(f[1])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return procInfo{comm: s[open+1 : end], ppid: ppid, cpu: time.Duration(utime+stime) * time.Second / 100}, true // USER_HZ
}
