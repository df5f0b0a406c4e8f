package agent

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestFindContainerPID(t *testing.T) {
	root := t.TempDir()
	id := "0123456789abcdef0123456789abcdef"
	procs := []struct {
		pid, ppid int
		cgroup    string
	}{
		{1, 0, "0::/init.scope"},
		{900, 1, "0::/system.slice/containerd.service"},
		{1200, 900, "0::/kubepods/besteffort/pod1/" + id},                      // container init
		{1300, 1200, "0::/kubepods/besteffort/pod1/" + id},                     // its child
		{1100, 900, "0::/kubepods/besteffort/pod2/ffffffffffffffffffffffffff"}, // another container
	}
	for _, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(p.pid))
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "cgroup"), []byte(p.cgroup+"\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "stat"), []byte(strconv.Itoa(p.pid)+" (my (app)) S "+strconv.Itoa(p.ppid)+" 0 0"), 0o644)
	}
	pid, err := FindContainerPID(root, id)
	if err != nil || pid != 1200 {
		t.Errorf("FindContainerPID = %d, %v; want 1200", pid, err)
	}
	if _, err := FindContainerPID(root, "deadbeefdeadbeef"); err == nil {
		t.Error("unknown container found")
	}
}

// TestOpenNamespaceOwn: a target in the agent's own namespaces (an
// ephemeral agent in the target's pod) is worked on without setns, which
// would need CAP_SYS_ADMIN: the namespace is not held, and inNetns runs
// on the calling goroutine's namespace.
func TestOpenNamespaceOwn(t *testing.T) {
	for _, ns := range []string{"net", "uts"} {
		f, err := openNamespace(os.Getpid(), ns)
		if err != nil || f != nil {
			t.Errorf("%s: own namespace opened as %v, %v; want nil, nil", ns, f, err)
		}
	}
	tg, err := openTarget(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	if tg.netns != nil || tg.utsns != nil {
		t.Error("own namespaces held")
	}
	if _, err := tg.hostname(); err != nil {
		t.Errorf("hostname: %v", err)
	}
	if err := tg.inNetns(func() error { return nil }); err != nil {
		t.Errorf("inNetns: %v", err)
	}
}

// TestStaleTable: a table is stale when its agent's PID is gone from the
// agent's own PID namespace; one of another PID namespace is left alone.
func TestStaleTable(t *testing.T) {
	own := ownPIDNamespace()
	if own == 0 {
		t.Skip("no /proc/self/ns/pid")
	}
	live := strconv.Itoa(os.Getppid())
	for _, tt := range []struct {
		name  string
		stale bool
	}{
		{tablePrefix + live + "_" + strconv.FormatUint(own, 10), false},
		{tablePrefix + "999999999_" + strconv.FormatUint(own, 10), true},
		{tablePrefix + "999999999_" + strconv.FormatUint(own+1, 10), false}, // another PID namespace
		{tablePrefix + live, false},                                         // an older agent's name
		{tablePrefix + "999999999", true},
		{tableName(), true}, // this process's own, from an earlier life of the PID
	} {
		if got := staleTable(tt.name, own); got != tt.stale {
			t.Errorf("staleTable(%s) = %v, want %v", tt.name, got, tt.stale)
		}
	}
}
