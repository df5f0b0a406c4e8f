package integration

import (
	"os"
	"os/exec"
	"path/filepath"
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
// flistxattr, fstatvfs); a path's stat and its open file's fstat name
// one file (st_dev, st_ino), so cp copies it (under the preload it said
// "skipping file ..., as it was replaced while being copied": the path's
// numbers were the target's, the open file's the view's); `df` as far as
// it can (see below). Before, ls -l printed "No such file or
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
print("lgetxattr", os.getxattr(sys.argv[2], "user.color", follow_symlinks=True).decode())
st, fst = os.stat(sys.argv[1]), os.fstat(fd)
print("same file", (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino))`
	script := strings.Join([]string{
		"ls -l " + d + "/config.yaml " + d + "/link " + d,
		"getfattr -d " + d + "/config.yaml",
		"getfattr -n user.nope " + d + "/config.yaml; true",
		"echo fs: $(stat -f -c '%T %b' " + d + ")",
		"df -P " + d + "/sub",
		"c=$(mktemp -d) && cp " + d + "/config.yaml $c/copy && echo copied: $(cat $c/copy); rm -rf $c",
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
			"fs: tmpfs 1792", "fgetxattr blue flistxattr ['user.color'] fstatvfs 255", "lgetxattr blue", "same file True", "copied: pod: config\n")
		// df finds a directory's mount point in this machine's mount
		// table by st_dev, then by walking up (stat "..", chdir "..")
		// while st_dev stays the same, and asks statvfs of where it
		// stops. Every file of the FUSE view has the view's st_dev (a
		// remote path's stat says the same under both engines, so that
		// it matches its open file), so the walk climbs the view to its
		// root, "/", which the rules leave local: df shows this
		// machine's root file system under both engines (README: a ✗
		// caveat), while stat -f above is the target's.
		var dfLine []string
		for _, l := range strings.Split(out, "\n") {
			if fs := strings.Fields(l); len(fs) == 6 && strings.HasSuffix(fs[4], "%") {
				dfLine = fs
			}
		}
		if dfLine == nil || dfLine[0] != "-" || dfLine[1] == "7168" || dfLine[5] != "/" {
			t.Errorf("df: %q, want this machine's / (update the README if this changed):\n%s", dfLine, out)
		}
	})
}

// TestFilesAccess: access, faccessat (with faccessat2's flags), eaccess
// and euidaccess of the target's files answer as the target's agent sees
// them under both engines. The agent is who opens the target's files for
// the program (root in the target's container, as upstream's agent), so
// access says yes exactly where the program's open would succeed: read
// and write of a mode 000 file, execute only with an execute bit, EROFS
// for a write on a read-only mount, ENOENT for a missing file or (when
// following) a dangling symlink. The oracle is the same probe run as root
// in the pod's own mount namespace; on this machine none of the files
// exist. The shell's test (dash: faccessat with AT_EACCESS), coreutils'
// test (euidaccess, which glibc runs past the faccessat hook) and Python
// (os.access; ctypes for the errno) each ask.
func TestFilesAccess(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	d, inPod := podOnlyDir(t, f)
	for name, mode := range map[string]os.FileMode{"f": 0o600, "noperm": 0, "x": 0o700} {
		mustWrite(t, inPod+"/"+name, "#!/bin/sh\n")
		if err := os.Chmod(inPod+"/"+name, mode); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range []string{"/sub", "/ro"} {
		if err := os.Mkdir(inPod+dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(t, inPod+"/ro/g", "read-only\n")
	if err := os.Symlink("nowhere", inPod+"/dangling"); err != nil {
		t.Fatal(err)
	}
	pod := []string{"nsenter", "-t", strconv.Itoa(f.podPID), "-m", "--"}
	run(t, append(pod, "sh", "-c", `mount --bind "$0" "$0" && mount -o remount,bind,ro "$0"`, d+"/ro")...)
	py := `import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD, AT_SYMLINK_NOFOLLOW, AT_EACCESS = -100, 0x100, 0x200
def res(r):
    return "ok" if r == 0 else errno.errorcode[ctypes.get_errno()]
for name in sys.argv[2:]:
    p = (sys.argv[1] + "/" + name).encode()
    line = [name] + [m + "=" + res(libc.access(p, v)) for m, v in (("F", os.F_OK), ("R", os.R_OK), ("W", os.W_OK), ("X", os.X_OK))]
    line.append("eaccess-W=" + res(libc.eaccess(p, os.W_OK)))
    line.append("nofollow-F=" + res(libc.faccessat(AT_FDCWD, p, os.F_OK, AT_SYMLINK_NOFOLLOW | AT_EACCESS)))
    line.append("os.access-RX=" + str(os.access(p, os.R_OK | os.X_OK)))
    print(line)`
	names := "f noperm x sub ro/g missing dangling"
	script := "for n in " + names + `; do
		s=; [ -e "$0/$n" ] && s=${s}e; test -r "$0/$n" && s=${s}r; test -w "$0/$n" && s=${s}w; test -x "$0/$n" && s=${s}x
		c=; /usr/bin/test -r "$0/$n" && c=${c}r; /usr/bin/test -w "$0/$n" && c=${c}w; /usr/bin/test -x "$0/$n" && c=${c}x
		echo "$n sh=[$s] test=[$c]"
	done; python3 -c '` + py + `' "$0" ` + names
	want := run(t, append(pod, "sh", "-c", script, d)...)
	// What the test stands for, should the pod's answers change.
	mustContain(t, want, "noperm sh=[erw] test=[rw]", "x sh=[erwx]", "ro/g sh=[er] test=[r]", "missing sh=[] test=[]",
		"['noperm', 'F=ok', 'R=ok', 'W=ok', 'X=EACCES', 'eaccess-W=ok'",
		"['ro/g', 'F=ok', 'R=ok', 'W=EROFS', 'X=EACCES', 'eaccess-W=EROFS'",
		"['missing', 'F=ENOENT', 'R=ENOENT', 'W=ENOENT', 'X=ENOENT', 'eaccess-W=ENOENT', 'nofollow-F=ENOENT', 'os.access-RX=False']",
		"['dangling', 'F=ENOENT', 'R=ENOENT', 'W=ENOENT', 'X=ENOENT', 'eaccess-W=ENOENT', 'nofollow-F=ok'")
	cfg := writeConfig(t, `{"feature": {"fs": {"mode": "read", "read_only": ["^`+d+`"]}}}`)
	eachEngine(t, func(t *testing.T, engine ...string) {
		out, err := f.mirrord(ctx(t), nil, append(engine, "-f", cfg, "--", "sh", "-c", script, d)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if out != want {
			t.Errorf("the target's agent answers:\n%s\nthe program saw:\n%s", want, out)
		}
	})
}

// TestFilesStatx: stat, lstat and statx of the target's files show the
// target's own blocks, block size, device numbers and birth time under
// both engines, as the same probe run in the pod sees them: a written
// file (8 blocks of tmpfs), a sparse one (1 MiB, no blocks), a character
// device, and a hugetlbfs directory and file (2 MiB blocks, no birth
// time: statx leaves STATX_BTIME out and stat's %W says 0). Before, both
// engines made the blocks up from the size, said 4096 for the block size,
// 0 for a device's numbers, and gave no birth time at all. coreutils'
// stat asks with statx (mask with STATX_BTIME for %W), Python with stat
// and lstat. Both with the FUSE view and without (no /dev/fuse).
func TestFilesStatx(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	d, inPod := podOnlyDir(t, f)
	mustWrite(t, inPod+"/f", "pod: config\n")
	if err := os.Truncate(writeEmpty(t, inPod+"/sparse"), 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(inPod+"/null", unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(inPod+"/huge", 0o755); err != nil {
		t.Fatal(err)
	}
	pod := []string{"nsenter", "-t", strconv.Itoa(f.podPID), "-m", "--"}
	run(t, append(pod, "mount", "-t", "hugetlbfs", "none", d+"/huge")...)
	writeEmpty(t, inPod+"/huge/h")
	names := []string{"f", "sparse", "null", "huge", "huge/h"}
	var paths []string
	for _, n := range names {
		paths = append(paths, d+"/"+n)
	}
	py := `import os, sys
for p in sys.argv[1:]:
    for st in (os.stat(p), os.lstat(p)):
        print(p, "blocks", st.st_blocks, "blksize", st.st_blksize, "rdev", os.major(st.st_rdev), os.minor(st.st_rdev))`
	script := "stat -c '%n %F size %s blocks %b of %B blksize %o dev %t:%T btime %W' " + strings.Join(paths, " ") +
		"; python3 -c '" + py + "' " + strings.Join(paths, " ")
	want := run(t, append(pod, "sh", "-c", script)...)
	mustContain(t, want, d+"/f regular file size 12 blocks 8 of 512 blksize 4096 dev 0:0 btime ",
		d+"/sparse regular file size 1048576 blocks 0 of 512 blksize 4096",
		d+"/null character special file size 0 blocks 0 of 512 blksize 4096 dev 1:3",
		d+"/huge directory size 0 blocks 0 of 512 blksize 2097152 dev 0:0 btime 0\n",
		d+"/huge/h blocks 0 blksize 2097152 rdev 0 0")
	if strings.Contains(want, d+"/f regular file size 12 blocks 8 of 512 blksize 4096 dev 0:0 btime 0\n") {
		t.Fatal("the pod's tmpfs keeps no birth time: the test cannot tell")
	}
	cfg := writeConfig(t, `{"feature": {"fs": {"mode": "read", "read_only": ["^`+d+`"]}}}`)
	eachEngine(t, func(t *testing.T, engine ...string) {
		// With the FUSE view, and without it (the sandbox's memfd
		// fallback answers then).
		for _, setup := range []string{"true", noFUSE} {
			out, err := f.mirrordAfter(ctx(t), setup, nil, append(engine, "-f", cfg, "--", "sh", "-c", script)...)
			if err != nil {
				t.Fatalf("%s: %v\n%s", setup, err, out)
			}
			if out != want {
				t.Errorf("%s: in the pod:\n%s\nthe program saw:\n%s", setup, want, out)
			}
		}
	})
}

// writeEmpty creates an empty file (with no write: hugetlbfs refuses
// even an empty one).
func writeEmpty(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	return path
}

// TestFilesWriteMetadata: in write mode, chmod, chown, touch (utimensat),
// truncate, ln and ln -s of the target's files change the target's files
// under both engines (path calls and, from Python, their fd forms), and
// the program sees the result, owners included (the sandbox maps every
// id, as a program outside it sees them). In read mode the same calls do
// not reach the target.
func TestFilesWriteMetadata(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	d, inPod := podOnlyDir(t, f)
	cfg := writeConfig(t, `{"feature": {"fs": {"mode": "read", "read_write": ["^`+d+`"]}}}`)
	py := `import os, sys
d = sys.argv[1]
os.truncate(d + "/f", 3)
fd = os.open(d + "/g", os.O_RDWR)
os.fchmod(fd, 0o604)
os.ftruncate(fd, 1)
os.utime(fd, ns=(3_000_000_000, 4_000_000_000))
os.close(fd)
os.utime(d + "/soft", ns=(5_000_000_000, 6_000_000_000), follow_symlinks=False)`
	script := strings.Join([]string{
		"chmod 640 " + d + "/f",
		"chown 1234:2345 " + d + "/f",
		"touch -m -d @1577934245 " + d + "/f",
		"ln " + d + "/f " + d + "/hard",
		"ln -s f " + d + "/soft",
		"python3 -c '" + py + "' " + d,
		"stat -c '%n %a %u %g %s %Y' " + d + "/f " + d + "/g",
	}, " && ")
	eachEngine(t, func(t *testing.T, engine ...string) {
		for _, name := range []string{"f", "g", "hard", "soft"} {
			os.Remove(inPod + "/" + name)
		}
		mustWrite(t, inPod+"/f", "content")
		mustWrite(t, inPod+"/g", "content")
		out, err := f.mirrord(ctx(t), nil, append(engine, "-f", cfg, "--", "sh", "-c", script)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		// The program's view: the mtime is truncate's (after touch).
		mustContain(t, out, d+"/f 640 1234 2345 3 ", d+"/g 604 0 0 1 4\n")
		var st unix.Stat_t
		if err := unix.Stat(inPod+"/f", &st); err != nil || st.Mode&0o7777 != 0o640 || st.Uid != 1234 || st.Gid != 2345 || st.Size != 3 || st.Nlink != 2 {
			t.Errorf("the target's f: %+v, %v", st, err)
		}
		if err := unix.Stat(inPod+"/g", &st); err != nil || st.Mode&0o7777 != 0o604 || st.Size != 1 || st.Mtim.Sec != 4 || st.Atim.Sec != 3 {
			t.Errorf("the target's g (fd calls): %+v, %v", st, err)
		}
		if target, err := os.Readlink(inPod + "/soft"); err != nil || target != "f" {
			t.Errorf("the target's symlink: %q, %v", target, err)
		}
		if err := unix.Lstat(inPod+"/soft", &st); err != nil || st.Mtim.Sec != 6 {
			t.Errorf("the symlink's own times (utimensat without following): %+v, %v", st, err)
		}

		// Read mode: chmod of the target's file does not reach it (the
		// local path does not exist).
		out, err = f.mirrord(ctx(t), nil, append(engine, "--", "sh", "-c", "chmod 600 "+d+"/g; echo done")...)
		if err != nil {
			t.Fatalf("read mode: %v\n%s", err, out)
		}
		if err := unix.Stat(inPod+"/g", &st); err != nil || st.Mode&0o7777 != 0o604 {
			t.Errorf("read mode changed the target's file: %o, %v", st.Mode&0o7777, err)
		}
	})
}

// TestFilesWriteWithoutFUSE: mirrord run by a user who may not mount FUSE
// serves remote files as copies. A write-only open (shell redirection)
// still reaches the target, through a pipe mirrord drains; no write ever
// lands in a local file of the same name (before, the preload wrote the
// local file and only said so in its log). A read-write open (Python's
// open(path, "r+")) fails with EOPNOTSUPP, and the program's user is told
// why on stderr, once however many opens fail (before: in the log only).
// cd into the target's directory is refused. The preload runs as nobody
// (it mounts FUSE as root only); then both engines run as root with
// /dev/fuse unusable (noFUSE): the preload through goshim.Copies, the
// sandbox through its own memfd fallback, the same code. An unprivileged
// sandbox also needs /dev/net/tun opened to users, which this test does
// not change.
func TestFilesWriteWithoutFUSE(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	d, inPod := podOnlyDir(t, f)
	if err := os.Chmod(inPod, 0o777); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, inPod+"/rw.txt", "the target's\n")
	cfg := writeConfig(t, `{"feature": {"fs": {"mode": "read", "read_write": ["^`+d+`"]}}}`)
	if err := os.Chmod(cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(cfg), filepath.Dir(filepath.Dir(cfg))} {
		os.Chmod(p, 0o755) // the config's directories, for the unprivileged user
	}
	home := t.TempDir()
	os.Chmod(home, 0o777)
	// The binary, where the unprivileged user (and its sandbox helper)
	// may run it.
	bin := filepath.Join(home, "bin", "mirrord")
	os.Mkdir(filepath.Dir(bin), 0o755)
	if b, err := os.ReadFile(mirrordBin); err != nil || os.WriteFile(bin, b, 0o755) != nil {
		t.Fatalf("copying the binary: %v", err)
	}
	// cd into the target's directory has no view to go to: refused
	// (EOPNOTSUPP), not the empty local directory of the same name.
	py := `import errno, sys
for _ in range(2):
    try:
        open(sys.argv[1], "r+")
        print("r+ opened")
    except OSError as e:
        print("r+", "EOPNOTSUPP" if e.errno == errno.EOPNOTSUPP else errno.errorcode[e.errno])`
	script := "echo written without FUSE > " + d + "/out.txt && echo wrote; cd " + d + " && echo entered: $(ls) || echo cd refused; " +
		"python3 -c '" + py + "' " + d + "/rw.txt"
	check := func(t *testing.T, out string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "wrote", "cd refused", "r+ EOPNOTSUPP\nr+ EOPNOTSUPP\n",
			"mirrord: warning: "+d+"/rw.txt: read-write opens of remote files need FUSE, which mirrord could not mount (",
			"they fail with EOPNOTSUPP, reads and write-only opens still reach the target (said once)")
		if n := strings.Count(out, "read-write opens of remote files need FUSE"); n != 1 {
			t.Errorf("the warning came %d times, want once:\n%s", n, out)
		}
		waitFor(t, "the write to reach the target", func() bool {
			b, _ := os.ReadFile(inPod + "/out.txt")
			return string(b) == "written without FUSE\n"
		})
		if b, _ := os.ReadFile(inPod + "/rw.txt"); string(b) != "the target's\n" {
			t.Errorf("the target's file changed: %q", b)
		}
		if _, err := os.Stat(d + "/out.txt"); err == nil {
			t.Error("the write landed in a local file")
		}
	}
	t.Run("preload-nobody", func(t *testing.T) {
		os.Remove(inPod + "/out.txt")
		// mirrord itself runs as nobody (after the fixture's root-only
		// resolv.conf mount).
		args := []string{"-m", "--", "sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec setpriv --reuid=65534 --regid=65534 --clear-groups "$@"`,
			f.resolvConf, bin, "exec", "--agent-addr", f.agentAddr, "--engine", "preload", "-f", cfg, "--", "sh", "-c", script}
		cmd := exec.CommandContext(ctx(t), "unshare", args...)
		cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CACHE_HOME="+home, "XDG_RUNTIME_DIR="+home)
		out, err := cmd.CombinedOutput()
		check(t, string(out), err)
		mustContain(t, string(out), "could not mount (opening /dev/fuse: permission denied; the preload engine needs root and /dev/fuse)")
	})
	eachEngine(t, func(t *testing.T, engine ...string) {
		os.Remove(inPod + "/out.txt")
		out, err := f.mirrordAfter(ctx(t), noFUSE, nil, append(engine, "-f", cfg, "--", "sh", "-c", script)...)
		check(t, out, err)
	})
}
