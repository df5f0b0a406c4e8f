package integration

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFilesMetadata: the calls that ask about a remote file without
// opening it get the target's answer under both engines: `ls -l` (statx,
// lgetxattr for the SELinux label, getxattr for the ACL), `getfattr`
// (listxattr, getxattr: the target's values, ENODATA where it has none),
// `stat -f` (statfs), and the fd forms from Python (fgetxattr,
// flistxattr, fstatvfs). Before, ls -l printed "No such file or
// directory" beside the right listing: the xattr calls went to this
// machine, where the file does not exist.
func TestFilesMetadata(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	// A directory only the target has, on a file system of a size that
	// tells it from this machine's whatever /tmp is here.
	d, inPod := podOnlyDir(t, f)
	run(t, "nsenter", "-t", strconv.Itoa(f.podPID), "-m", "--", "mount", "-o", "remount,size=7m", d)
	mustWrite(t, inPod+"/config.yaml", "pod: config\n")
	if err := os.Mkdir(inPod+"/sub", 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("config.yaml", inPod+"/link"); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(inPod+"/config.yaml", "user.color", []byte("blue"), 0); err != nil {
		t.Fatalf("setting an xattr on the target's file: %v", err)
	}
	cfg := writeConfig(t, `{"feature": {"fs": {"mode": "read", "read_only": ["^`+d+`"]}}}`)
	py := `import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print("fgetxattr", os.getxattr(fd, "user.color").decode(), "flistxattr", os.listxattr(fd), "fstatvfs", os.fstatvfs(fd).f_namemax)
print("lgetxattr", os.getxattr(sys.argv[2], "user.color", follow_symlinks=True).decode())`
	script := strings.Join([]string{
		"ls -l " + d + "/config.yaml " + d + "/link " + d,
		"getfattr -d " + d + "/config.yaml",
		"getfattr -n user.nope " + d + "/config.yaml; true",
		"echo fs: $(stat -f -c '%T %b' " + d + ")",
		"python3 -c '" + py + "' " + d + "/config.yaml " + d + "/link",
	}, "; ")
	eachEngine(t, func(t *testing.T, engine ...string) {
		out, err := f.mirrord(ctx(t), nil, append(engine, "-f", cfg, "--", "sh", "-c", script)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if strings.Contains(out, "No such file") {
			t.Errorf("a metadata call went to this machine:\n%s", out)
		}
		mustContain(t, out, "link -> config.yaml", "sub", `user.color="blue"`, "user.nope: No such attribute",
			"fs: tmpfs 1792", "fgetxattr blue flistxattr ['user.color'] fstatvfs 255", "lgetxattr blue")
	})
}
