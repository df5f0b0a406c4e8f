package integration

import (
	"os"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFilesChdir: `cd` into a directory only the target has makes it the
// program's working directory under both engines: pwd (bash's and
// coreutils'), relative reads and listings, `cd sub` and `cd ..`, a child
// inheriting it, Python's os.getcwd, a static Go program's os.Chdir,
// os.Getwd and the getcwd system call, and `cd` back to a local
// directory. Before, the chdir went to this machine: bash said "No such
// file or directory" (or entered the empty local directory of the same
// name, whose files are not the target's).
func TestFilesChdir(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	d, inPod := podOnlyDir(t, f)
	mustWrite(t, inPod+"/config.yaml", "pod: config\n")
	if err := os.Mkdir(inPod+"/sub", 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, inPod+"/sub/inner.txt", "inner of the pod\n")
	// d exists on this machine too, empty, and the rules send it to the
	// target: the target's directory wins, as for an open.
	cfg := writeConfig(t, `{"feature": {"fs": {"mode": "read", "read_only": ["^`+d+`"]}}}`)
	local := t.TempDir()
	mustWrite(t, local+"/here.txt", "local file\n")
	py := `import os; print("py", os.getcwd(), open("config.yaml").read().strip())`
	script := strings.Join([]string{
		"cd " + d,
		"echo bash: $(pwd)",
		"echo coreutils: $(/bin/pwd)",
		"cat config.yaml",
		"echo ls: $(ls)",
		"cd sub",
		"echo sub: $(/bin/pwd) $(cat inner.txt)",
		"cd ..",
		"echo up: $(/bin/pwd)",
		"python3 -c '" + py + "'",
		"sh -c 'echo child: $(/bin/pwd) $(cat sub/inner.txt)'",
		"cd " + local,
		"echo back: $(/bin/pwd) $(cat here.txt)",
	}, " && ")
	fsclient := buildFSClient(t)
	eachEngine(t, func(t *testing.T, engine ...string) {
		out, err := f.mirrord(ctx(t), nil, append(engine, "-f", cfg, "--", "bash", "-c", script)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "bash: "+d+"\n", "coreutils: "+d+"\n", "pod: config\n", "ls: config.yaml sub\n",
			"sub: "+d+"/sub inner of the pod\n", "up: "+d+"\n", "py "+d+" pod: config\n",
			"child: "+d+" inner of the pod\n", "back: "+local+" local file\n")

		// Under a debugger (strace): the preload's chdir is the process's
		// own fchdir; the sandbox cannot make a traced thread run it (one
		// tracer per thread), so the chdir fails, and says so.
		out, err = f.mirrord(ctx(t), []string{"MIRRORD_LOG_LEVEL=warn"}, append(engine, "-f", cfg, "--", "strace", "-f", "-o", "/dev/null",
			"bash", "-c", "cd "+d+" && cat config.yaml")...)
		if engine[1] == "netstack" {
			mustContain(t, out, "cd: "+d+": Operation not permitted", "a debugger")
		} else if err != nil {
			t.Errorf("under strace: %v\n%s", err, out)
		} else {
			mustContain(t, out, "pod: config\n")
		}

		if engine[1] != "netstack" {
			return // the static Go client gets no hooks from a forced preload engine
		}
		// A static Go program: os.Chdir, os.Getwd ($PWD no longer
		// matches "."), the getcwd system call, a relative read.
		ops := []string{"cd " + d, "pwd", "getcwd", "read config.yaml", "cd sub", "getcwd", "read inner.txt",
			"cd ..", "getcwd", "cd " + local, "getcwd", "read here.txt"}
		out, err = f.mirrord(ctx(t), nil, append(append(engine, "-f", cfg, "--", fsclient), ops...)...)
		if err != nil {
			t.Fatalf("fsclient: %v\n%s", err, out)
		}
		mustContain(t, out, "pwd: "+d+"\n", "getcwd: "+d+"\n", "read config.yaml: pod: config\n",
			"getcwd: "+d+"/sub\n", "read inner.txt: inner of the pod\n", "getcwd: "+local+"\n", "read here.txt: local file\n")
		if strings.Contains(out, "error") {
			t.Errorf("an operation failed:\n%s", out)
		}
	})
}

// TestFilesLegacyUtime: in write mode the obsolete time-setting calls
// change the target's file under both engines: from libc (utime, utimes,
// lutimes, futimesat, called by Python through ctypes, as C programs
// call them) and as amd64's own system calls (utime, utimes, futimesat,
// which static programs and Go's syscall package make). Before, they all
// set the times of a local file.
func TestFilesLegacyUtime(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	d, inPod := podOnlyDir(t, f)
	cfg := writeConfig(t, `{"feature": {"fs": {"mode": "read", "read_write": ["^`+d+`"]}}}`)
	// Each libc call sets its own file's mtime to a value of its own.
	py := `import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
d = sys.argv[1]
class utimbuf(ctypes.Structure):
    _fields_ = [("actime", ctypes.c_long), ("modtime", ctypes.c_long)]
class timeval(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long)]
def tv(s):
    return (timeval * 2)(timeval(s, 0), timeval(s, 0))
def check(name, r):
    print(name, "ok" if r == 0 else os.strerror(ctypes.get_errno()))
check("utime", libc.utime((d + "/a").encode(), ctypes.byref(utimbuf(1000001, 1000001))))
check("utimes", libc.utimes((d + "/b").encode(), tv(1000002)))
check("lutimes", libc.lutimes((d + "/link").encode(), tv(1000003)))
check("futimesat", libc.futimesat(-100, (d + "/c").encode(), tv(1000004)))`
	fsclient := buildFSClient(t)
	eachEngine(t, func(t *testing.T, engine ...string) {
		for _, name := range []string{"a", "b", "c", "g1", "g2", "g3", "link"} {
			os.Remove(inPod + "/" + name)
		}
		for _, name := range []string{"a", "b", "c", "g1", "g2", "g3"} {
			mustWrite(t, inPod+"/"+name, name)
		}
		if err := os.Symlink("a", inPod+"/link"); err != nil {
			t.Fatal(err)
		}
		out, err := f.mirrord(ctx(t), nil, append(engine, "-f", cfg, "--", "python3", "-c", py, d)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "utime ok", "utimes ok", "lutimes ok", "futimesat ok")
		want := map[string]int64{"a": 1000001, "b": 1000002, "c": 1000004}
		// The legacy system calls, from the Go client: amd64 has them, and
		// the sandbox sees them (a forced preload engine hooks nothing in a
		// static program).
		if runtime.GOARCH == "amd64" && engine[1] == "netstack" {
			out, err = f.mirrord(ctx(t), nil, append(engine, "-f", cfg, "--", fsclient,
				"utime "+d+"/g1 2000001", "utimes "+d+"/g2 2000002", "futimesat "+d+"/g3 2000003", "mtime "+d+"/g3")...)
			if err != nil {
				t.Fatalf("fsclient: %v\n%s", err, out)
			}
			mustContain(t, out, "utime "+d+"/g1 2000001: ok", "utimes "+d+"/g2 2000002: ok",
				"futimesat "+d+"/g3 2000003: ok", "mtime "+d+"/g3: 2000003")
			want["g1"], want["g2"], want["g3"] = 2000001, 2000002, 2000003
		}
		for name, sec := range want {
			var st unix.Stat_t
			if err := unix.Stat(inPod+"/"+name, &st); err != nil || st.Mtim.Sec != sec || st.Atim.Sec != sec {
				t.Errorf("the target's %s: mtime %d atime %d, want %d (%v)", name, st.Mtim.Sec, st.Atim.Sec, sec, err)
			}
		}
		var st unix.Stat_t
		if err := unix.Lstat(inPod+"/link", &st); err != nil || st.Mtim.Sec != 1000003 {
			t.Errorf("lutimes: the symlink's own mtime %d, want 1000003 (%v)", st.Mtim.Sec, err)
		}
		if _, err := os.Stat(d + "/a"); err == nil {
			t.Error("a local file was made")
		}
	})
}
