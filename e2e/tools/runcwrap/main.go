// Command runcwrap is the OCI runtime containerd runs for the e2e cluster. It
// edits the container's OCI spec, then execs the real runc.
//
// Why: on some CI machines (VMs whose init drops capabilities) root lacks
// CAP_SYS_RESOURCE, and runc then fails to start any container: it writes
// process.oomScoreAdj (lowering it needs the capability) and applies
// process.rlimits (raising a hard limit needs it). When the capability is
// missing, runcwrap removes those two settings from the bundle's config.json
// (create, run) or from the --process file (exec). When root has the
// capability it changes nothing.
//
// It also removes CAP_SYS_RESOURCE itself from the process's capability sets:
// a runtime that grants "all" capabilities from a fixed list rather than from
// its own bounding set (dockerd for `docker run --privileged`, which is what
// kind's node containers are) asks for it, and runc then fails with "unable
// to apply caps: operation not permitted". The kind cluster runs this wrapper
// twice: as dockerd's runtime for the node containers, and inside each node
// as the node's containerd runtime for the pods.
//
// The real runc's path is set at build time: -ldflags "-X main.realRunc=PATH".
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

var realRunc = "/usr/sbin/runc"

const capSysResource = 24

func main() {
	args := os.Args[1:]
	if !hasCap(capSysResource) {
		if file := specFile(args); file != "" {
			if err := dropPrivilegedSettings(file); err != nil {
				fmt.Fprintf(os.Stderr, "runcwrap: %s: %v\n", file, err)
				os.Exit(1)
			}
		}
	}
	err := syscall.Exec(realRunc, append([]string{realRunc}, args...), os.Environ())
	fmt.Fprintf(os.Stderr, "runcwrap: exec %s: %v\n", realRunc, err)
	os.Exit(1)
}

// hasCap reports whether this process's effective capability set has bit.
func hasCap(bit uint) bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return true // cannot tell: leave the spec alone
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err != nil || caps&(1<<bit) != 0
		}
	}
	return true
}

// globalWithValue lists runc's global flags that take a separate value, so
// that the subcommand can be told apart from a flag's value.
var globalWithValue = map[string]bool{"--root": true, "--log": true, "--log-format": true, "--criu": true, "--rootless": true}

// specFile returns the JSON file holding the process settings for this runc
// invocation, or "" if the subcommand has none.
func specFile(args []string) string {
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") {
		if globalWithValue[args[i]] {
			i++
		}
		i++
	}
	if i >= len(args) {
		return ""
	}
	sub, rest := args[i], args[i+1:]
	switch sub {
	case "create", "run":
		bundle := "."
		if v := flagValue(rest, "--bundle", "-b"); v != "" {
			bundle = v
		}
		return filepath.Join(bundle, "config.json")
	case "exec":
		return flagValue(rest, "--process", "-p")
	}
	return ""
}

func flagValue(args []string, names ...string) string {
	for i, a := range args {
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1]
			}
			if v, ok := strings.CutPrefix(a, n+"="); ok {
				return v
			}
		}
	}
	return ""
}

// dropPrivilegedSettings removes oomScoreAdj and rlimits from a full OCI spec
// (they live under "process") or from a bare process spec (runc exec -p).
func dropPrivilegedSettings(file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	proc := doc
	if p, ok := doc["process"].(map[string]any); ok {
		proc = p
	}
	_, hadOOM := proc["oomScoreAdj"]
	_, hadRlimits := proc["rlimits"]
	hadCap := dropCapability(proc, "CAP_SYS_RESOURCE")
	if !hadOOM && !hadRlimits && !hadCap {
		return nil
	}
	delete(proc, "oomScoreAdj")
	delete(proc, "rlimits")
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	return os.WriteFile(file, out, st.Mode().Perm())
}

// dropCapability removes name from every capability set (bounding,
// effective, inheritable, permitted, ambient) of a process spec and reports
// whether any set had it.
func dropCapability(proc map[string]any, name string) bool {
	sets, ok := proc["capabilities"].(map[string]any)
	if !ok {
		return false
	}
	found := false
	for set, v := range sets {
		list, ok := v.([]any)
		if !ok {
			continue
		}
		kept := list[:0:0]
		for _, c := range list {
			if c == name {
				found = true
				continue
			}
			kept = append(kept, c)
		}
		sets[set] = kept
	}
	return found
}
