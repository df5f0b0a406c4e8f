package cli

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// releaseImagePages unmaps, from this process's page tables, the pages of
// its own executable that it mapped read-only (code and constants), and
// returns how many bytes of address space it went over.
//
// Why: the agent's resident memory is mostly its binary. Starting up (the
// package initializers of every library linked in, client-go's type
// registrations among them) touches code and data spread over the whole
// 80 MB file, and the kernel maps each touched page together with its
// neighbours (fault-around, and the page cache's large folios: ≈115 KiB
// mapped per page touched, measured). Once the agent listens, most of that
// code never runs again. MADV_DONTNEED on a read-only private file mapping
// only drops the page table entries: the pages stay in the page cache
// (shared, reclaimable, as they were), nothing the process wrote is lost
// (a read-only mapping has no private copies), and a page the agent needs
// again is mapped back on its next touch, from the cache. Writable
// mappings (data, bss, heap) are left alone.
func releaseImagePages() (int64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return 0, err
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, err
	}
	var total int64
	sc := bufio.NewScanner(bytes.NewReader(maps))
	for sc.Scan() {
		// start-end perms offset dev inode path. The inode alone says
		// which mappings are the binary's: on overlayfs (a container's
		// image) the maps show the layer's device, not the one stat
		// gives, and another read-only file that shared the number
		// would come to no harm either.
		f := strings.Fields(sc.Text())
		if len(f) < 6 || strings.Contains(f[1], "w") || f[4] != strconv.FormatUint(st.Ino, 10) {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if _, _, errno := unix.Syscall(unix.SYS_MADVISE, uintptr(start), uintptr(end-start), unix.MADV_DONTNEED); errno != 0 {
			return total, errno
		}
		total += int64(end - start)
	}
	return total, sc.Err()
}

// cgroupMemoryLimit returns the memory limit of the cgroup this process
// runs in (cgroup v2's memory.max, else v1's memory.limit_in_bytes), or 0
// when there is none.
func cgroupMemoryLimit(root string) int64 {
	for _, name := range []string{"memory.max", "memory/memory.limit_in_bytes"} {
		b, err := os.ReadFile(root + "/" + name)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 || n >= 1<<50 { // "max", or v1's "no limit"
			return 0
		}
		return n
	}
	return 0
}

// agentMemoryLimit is the soft memory limit the agent gives Go's runtime
// (debug.SetMemoryLimit) in a cgroup limited to limit bytes: 80 % of it.
// Without one the garbage collector lets the heap grow to twice what is
// live before collecting, and a burst the session budgets allow (each
// session's bytes, relay.Budget) plus its garbage would reach the pod's
// limit, where the kernel kills the agent for every session; near the soft
// limit the collector runs more often instead. 0 without a limit, or when
// GOMEMLIMIT says otherwise.
func agentMemoryLimit(limit int64) int64 {
	if limit <= 0 || os.Getenv("GOMEMLIMIT") != "" {
		return 0
	}
	return limit / 10 * 8
}
