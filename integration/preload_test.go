package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPreloadChildren: a layered shell's children are layered too — a
// dynamic one through the inherited preload, a Go/static one through
// `mirrord layer-exec` (the netstack sandbox, same session).
func TestPreloadChildren(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	out, err := f.mirrord(ctx(t), nil, "--engine", "preload", "--", "bash", "-c",
		"python3 testdata/pyclient.py "+svcName+" & wait; "+goclientBin+" "+svcName)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, w := range []string{"dns " + svcIP, "tcp " + svcBody, "udp echo:ping", "env " + secret} {
		if n := strings.Count(out, w); n != 2 {
			t.Errorf("%q appears %d times, want 2 (python and the static Go client):\n%s", w, n, out)
		}
	}
	mustContain(t, out, "hostname "+podHostname)
}

// TestPreloadFork: forked children keep working (no lock held across
// fork, no shared connection), 100 times over, and a fork-exec chain
// (gunicorn/uvicorn --reload style) stays layered.
func TestPreloadFork(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	out, err := f.mirrord(ctx(t), nil, "--engine", "preload", "--", "python3", "testdata/forker.py", svcName, "100", "fork")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	mustContain(t, out, "parent "+svcBody, "children ok 100 of 100")
	out, err = f.mirrord(ctx(t), nil, "--engine", "preload", "--", "python3", "testdata/forker.py", svcName, "3", "exec")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	mustContain(t, out, "children ok 3 of 3")
	if n := strings.Count(out, "tcp "+svcBody); n != 3 {
		t.Errorf("the exec'd children fetched %d times, want 3:\n%s", n, out)
	}
}

// TestFiles: with fs mode read, programs read the target's files (which
// only the target's mount namespace has), list its directories, stat and
// readlink; not_found paths fail to open (listings still show them, as
// upstream's do); local paths stay local.
func TestFiles(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	d := f.podFiles
	// A file the target has but the config hides.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/root%s/secret.txt", f.podPID, d), []byte("top secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	localDir := t.TempDir()
	os.WriteFile(filepath.Join(localDir, "local.txt"), []byte("local content\n"), 0o644)
	cfg := writeConfig(t, fmt.Sprintf(`{"feature": {"fs": {"mode": "read", "read_only": ["^%s"], "not_found": ["%s/secret"]}}}`, d, d))
	script := strings.Join([]string{
		"cat " + d + "/config.yaml",
		"cat " + d + "/link",
		"echo ls: $(ls " + d + ")",
		"echo readlink: $(readlink " + d + "/link)",
		"test -d " + d + "/sub && echo sub-is-dir",
		"echo size: $(stat -c %s " + d + "/config.yaml)",
		"cat " + d + "/secret.txt 2>/dev/null || echo secret-not-found",
		"cat " + d + "/missing 2>/dev/null || echo missing-not-found",
		"cat " + localDir + "/local.txt",
		// realpath(3) (glibc's bypasses the preload's hooks; node calls it)
		`echo realpath: $(node -e 'console.log(require("fs").realpathSync.native(process.argv[1]))' ` + d + "/link)",
	}, "; ")
	py := fmt.Sprintf(`import os; d=%q; print("py-read", open(d+"/config.yaml").read().strip()); print("py-list", sorted(os.listdir(d))); print("py-size", os.path.getsize(d+"/config.yaml")); print("py-exists", os.path.exists(d+"/missing"))`, d)
	eachEngine(t, func(t *testing.T, engine ...string) {
		{
			out, err := f.mirrord(ctx(t), nil, append(engine, "-f", cfg, "--", "sh", "-c", script)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			mustContain(t, out, "pod: config\npod: config\n", "ls: config.yaml link secret.txt sub", "readlink: config.yaml",
				"sub-is-dir", "size: 12", "secret-not-found", "missing-not-found", "local content",
				"realpath: "+d+"/config.yaml")
			out, err = f.mirrord(ctx(t), nil, append(engine, "-f", cfg, "--", "python3", "-c", py)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			mustContain(t, out, "py-read pod: config", "py-list ['config.yaml', 'link', 'secret.txt', 'sub']", "py-size 12", "py-exists False")
		}
	})
}

// TestFilesWrite: in write mode shell tools and Python create, write,
// rename and remove the target's files, under both engines; in read mode
// the same writes stay on this machine.
func TestFilesWrite(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	eachEngine(t, func(t *testing.T, engine ...string) {
		dir, inPod := podOnlyDir(t, f)
		mustWrite(t, inPod+"/old.txt", "old")
		cfg := writeConfig(t, `{"feature": {"fs": {"mode": "write"}}}`)
		script := strings.Join([]string{
			"echo 'written by sh' > " + dir + "/new.txt",
			"mkdir " + dir + "/d",
			"mv " + dir + "/new.txt " + dir + "/d/moved.txt",
			"echo read: $(cat " + dir + "/d/moved.txt)",
			"rm " + dir + "/old.txt",
			"echo ls: $(ls " + dir + ")",
			`python3 -c 'import sys; open(sys.argv[1], "w").write("from python\n")' ` + dir + "/py.txt",
		}, " && ")
		out, err := f.mirrord(ctx(t), nil, append(engine, "-f", cfg, "--", "sh", "-c", script)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "read: written by sh", "ls: d")
		if b, err := os.ReadFile(inPod + "/d/moved.txt"); string(b) != "written by sh\n" {
			t.Errorf("the target does not see the written file: %q, %v", b, err)
		}
		if b, err := os.ReadFile(inPod + "/py.txt"); string(b) != "from python\n" {
			t.Errorf("the target does not see Python's file: %q, %v", b, err)
		}
		if _, err := os.Stat(inPod + "/old.txt"); !os.IsNotExist(err) {
			t.Errorf("the removed file is still on the target: %v", err)
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("write mode changed this machine's directory: %v", entries)
		}

		// Read mode: the write lands locally, the target is untouched.
		out, err = f.mirrord(ctx(t), nil, append(engine, "--", "sh", "-c", "echo local > "+dir+"/new.txt")...)
		if err != nil {
			t.Fatalf("read mode: %v\n%s", err, out)
		}
		if b, err := os.ReadFile(dir + "/new.txt"); string(b) != "local\n" {
			t.Errorf("a write in read mode did not land locally: %q, %v", b, err)
		}
		if _, err := os.Stat(inPod + "/new.txt"); !os.IsNotExist(err) {
			t.Errorf("a write in read mode reached the target: %v", err)
		}
	})
}

// TestSkipProcesses: a program named in skip_processes sees only local
// files (both engines), while the other programs of the tree see the
// target's; and `go run` under mirrord builds from this machine's files
// (the toolchain is skipped as a build tool) while the program it builds
// reads the target's.
func TestSkipProcesses(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	d := f.podFiles
	cfg := writeConfig(t, fmt.Sprintf(`{"skip_processes": "cat", "feature": {"fs": {"mode": "read", "read_only": ["^%s"]}}}`, d))
	eachEngine(t, func(t *testing.T, engine ...string) {
		out, err := f.mirrord(ctx(t), nil, append(engine, "-f", cfg, "--", "sh", "-c",
			"head -1 "+d+"/config.yaml; cat "+d+"/config.yaml 2>/dev/null || echo cat-saw-local")...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "pod: config", "cat-saw-local")
	})
	t.Run("go run", func(t *testing.T) {
		cfg := writeConfig(t, fmt.Sprintf(`{"feature": {"fs": {"mode": "read", "read_only": ["^%s"]}}}`, d))
		out, err := f.mirrord(ctx(t), []string{"GOFLAGS=-mod=mod", "CGO_ENABLED=0"}, "-f", cfg, "--", "go", "run", "./testdata/readfile", d+"/config.yaml")
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, d+"/config.yaml: pod: config")
	})
}
