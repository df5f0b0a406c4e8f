package integration

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fsclientBin is integration/testdata/fsclient, a static Go program that
// runs the file operations it is given; built on first use.
var (
	fsclientOnce sync.Once
	fsclientBin  string
	fsclientErr  error
)

func buildFSClient(t *testing.T) string {
	t.Helper()
	fsclientOnce.Do(func() {
		fsclientBin = filepath.Join(filepath.Dir(mirrordBin), "fsclient")
		cmd := exec.Command("go", "build", "-o", fsclientBin, "./testdata/fsclient")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fsclientErr = fmt.Errorf("build fsclient: %v\n%s", err, out)
		}
	})
	if fsclientErr != nil {
		t.Fatal(fsclientErr)
	}
	return fsclientBin
}

// podOnlyDir makes a directory that exists, empty, on this machine and
// holds a tmpfs in the target's mount namespace only. It is outside /tmp,
// which feature.fs keeps local by default, so in the default mode (read)
// its files come from the target with no fs rules at all. It returns the
// path and the same directory as the target sees it, through /proc.
func podOnlyDir(t *testing.T, f *fixture) (dir, inPod string) {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	dir = "/var/lib/mirrord-it-" + hex.EncodeToString(b)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run(t, "nsenter", "-t", strconv.Itoa(f.podPID), "-m", "--", "mount", "-t", "tmpfs", "tmpfs", dir)
	inPod = fmt.Sprintf("/proc/%d/root%s", f.podPID, dir)
	return dir, inPod
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// opResults runs fsclient's ops through mirrord and returns each op's
// result ("OP: RESULT" lines; a result may span lines).
func opResults(t *testing.T, out string, ops []string) map[string]string {
	t.Helper()
	res := map[string]string{}
	rest := out
	for i, op := range ops {
		j := strings.Index(rest, op+": ")
		if j < 0 {
			t.Errorf("no result for %q in output:\n%s", op, out)
			continue
		}
		rest = rest[j+len(op)+2:]
		end := len(rest)
		if i+1 < len(ops) {
			if k := strings.Index(rest, "\n"+ops[i+1]+": "); k >= 0 {
				end = k
			}
		}
		res[op] = strings.TrimSuffix(rest[:end], "\n")
		rest = rest[end:]
	}
	return res
}

func checkOps(t *testing.T, out string, ops []string, want map[string]string) {
	t.Helper()
	got := opResults(t, out, ops)
	for _, op := range ops {
		w, ok := want[op]
		if !ok {
			continue
		}
		if got[op] != w {
			t.Errorf("%s: got %q, want %q", op, got[op], w)
		}
	}
}

// TestGoshimFilesRead: a static Go program run by `mirrord exec` (netstack
// engine) sees the target's files in the default fs mode, read.
func TestGoshimFilesRead(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	fsclient := buildFSClient(t)
	dir, inPod := podOnlyDir(t, f)
	mustWrite(t, inPod+"/config.yaml", "pod: config\n")
	os.Mkdir(inPod+"/sub", 0o755)
	os.Symlink("config.yaml", inPod+"/link")
	mustWrite(t, inPod+"/secret", "not for you")
	mustWrite(t, inPod+"/local.txt", "remote version")
	mustWrite(t, dir+"/local.txt", "local version") // this machine's
	if _, err := os.Stat(dir + "/config.yaml"); err == nil {
		t.Fatal("the target's files are visible on this machine: the fixture is wrong")
	}
	cfg := writeConfig(t, fmt.Sprintf(`{"feature": {"fs": {"local": ["^%s/local\\.txt$"], "not_found": ["^%s/secret"]}}}`, dir, dir))

	ops := []string{
		"read " + dir + "/config.yaml",
		"stat " + dir + "/config.yaml",
		"stat " + dir + "/sub",
		"ls " + dir,
		"readlink " + dir + "/link",
		"lstat " + dir + "/link",
		"read " + dir + "/link",
		"read " + dir + "/secret",
		"stat " + dir + "/secret",
		"read " + dir + "/local.txt",
		"read " + dir + "/missing",
		"write " + dir + "/written.txt stays local",
		"mkdir " + dir + "/localdir",
	}
	subInfo, err := os.Stat(inPod + "/sub")
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.mirrord(ctx(t), nil, append([]string{"-f", cfg, "--", fsclient}, ops...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkOps(t, out, ops, map[string]string{
		ops[0]:  "pod: config",
		ops[1]:  "size=12 dir=false link=false",
		ops[2]:  fmt.Sprintf("size=%d dir=true link=false", subInfo.Size()),
		ops[3]:  "config.yaml,link,local.txt,secret,sub",
		ops[4]:  "config.yaml",
		ops[5]:  "size=11 dir=false link=true",
		ops[6]:  "pod: config",
		ops[7]:  "error ENOENT",
		ops[8]:  "error ENOENT",
		ops[9]:  "local version",
		ops[10]: "error ENOENT",
		ops[11]: "ok",
		ops[12]: "ok",
	})
	// read mode: writes stay on this machine.
	if b, err := os.ReadFile(dir + "/written.txt"); string(b) != "stays local" {
		t.Errorf("a write in read mode did not land locally: %q, %v", b, err)
	}
	if _, err := os.Stat(inPod + "/written.txt"); err == nil {
		t.Error("a write in read mode reached the target")
	}
	if fi, err := os.Stat(dir + "/localdir"); err != nil || !fi.IsDir() {
		t.Errorf("mkdir in read mode did not happen locally: %v", err)
	}
	if _, err := os.Stat(inPod + "/localdir"); err == nil {
		t.Error("mkdir in read mode reached the target")
	}
}

// TestGoshimFilesWrite: in write mode a static Go program creates,
// writes, renames and removes the target's files.
func TestGoshimFilesWrite(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "30s")
	fsclient := buildFSClient(t)
	dir, inPod := podOnlyDir(t, f)
	mustWrite(t, inPod+"/old.txt", "old")
	cfg := writeConfig(t, `{"feature": {"fs": {"mode": "write"}}}`)
	ops := []string{
		"write " + dir + "/new.txt written by the program",
		"mkdir " + dir + "/d",
		"rename " + dir + "/new.txt " + dir + "/d/moved.txt",
		"read " + dir + "/d/moved.txt",
		"rm " + dir + "/old.txt",
		"ls " + dir,
		"rename " + dir + "/d/moved.txt /tmp/mirrord-it-crossdev",
	}
	out, err := f.mirrord(ctx(t), nil, append([]string{"-f", cfg, "--", fsclient}, ops...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	checkOps(t, out, ops, map[string]string{
		ops[0]: "ok",
		ops[1]: "ok",
		ops[2]: "ok",
		ops[3]: "written by the program",
		ops[4]: "ok",
		ops[5]: "d",
		ops[6]: "error EXDEV", // /tmp stays local
	})
	if b, err := os.ReadFile(inPod + "/d/moved.txt"); string(b) != "written by the program" {
		t.Errorf("the target does not see the written file: %q, %v", b, err)
	}
	if _, err := os.Stat(inPod + "/old.txt"); !os.IsNotExist(err) {
		t.Errorf("the removed file is still on the target: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("write mode changed this machine's directory: %v", entries)
	}
}

// TestGoshimFilesLarge: a 100 MB file of the target is read whole by the
// program and by a shell's sha256sum, with its checksum intact, while
// mirrord's own memory stays far below the file's size.
func TestGoshimFilesLarge(t *testing.T) {
	f := newFixture(t)
	f.startAgent("--ttl", "60s")
	fsclient := buildFSClient(t)
	dir, inPod := podOnlyDir(t, f)
	mustWrite(t, inPod+"/small", "small")
	big := make([]byte, 100<<20)
	rand.Read(big)
	if err := os.WriteFile(inPod+"/big", big, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(big)
	want := hex.EncodeToString(sum[:])
	big = nil

	out, baseline, err := f.mirrordHWM(ctx(t), "--", fsclient, "sha "+dir+"/small")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	out, peak, err := f.mirrordHWM(ctx(t), "--", fsclient, "sha "+dir+"/big")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, want+" 104857600 bytes") {
		t.Errorf("100 MB file: checksum mismatch, want %s:\n%s", want, out)
	}
	t.Logf("fsclient: %s", strings.TrimSpace(out))
	growth := peak - baseline
	t.Logf("mirrord peak RSS (VmHWM): %d KiB reading 5 bytes, %d KiB reading 100 MiB (+%d KiB)", baseline, peak, growth)
	if growth > 40<<10 {
		t.Errorf("mirrord's RSS grew by %d KiB while the program read a 100 MiB file: it holds the file", growth)
	}

	// The same through a shell script and coreutils: dynamic binaries,
	// which the netstack engine runs in the same sandbox and file layer.
	out, err = f.mirrord(ctx(t), nil, "--engine", "netstack", "--", "sh", "-c", "cat "+dir+"/small; echo; sha256sum "+dir+"/big")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	mustContain(t, out, "small\n", want+"  "+dir+"/big")
}

// mirrordHWM runs mirrord like fixture.mirrord and also returns the peak
// RSS of the mirrord process itself (VmHWM, KiB), sampled until it exits.
func (f *fixture) mirrordHWM(ctx context.Context, args ...string) (string, int64, error) {
	f.t.Helper()
	script := `mount --bind "$0" /etc/resolv.conf && exec "$@"`
	full := append([]string{"-m", "--", "sh", "-c", script, f.resolvConf, mirrordBin, "exec", "--agent-addr", f.agentAddr}, args...)
	cmd := exec.CommandContext(ctx, "unshare", full...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", 0, err
	}
	// unshare and sh exec in place: the pid becomes mirrord's.
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	var hwm int64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if v := readHWM(status); v > 0 {
				hwm = max(hwm, v)
			}
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	err := cmd.Wait()
	close(done)
	<-sampled
	return out.String(), hwm, err
}

// readHWM returns VmHWM of a process named mirrord, 0 otherwise.
func readHWM(status string) int64 {
	fh, err := os.Open(status)
	if err != nil {
		return 0
	}
	defer fh.Close()
	var isMirrord bool
	var hwm int64
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Name":
			isMirrord = v == "mirrord"
		case "VmHWM":
			hwm, _ = strconv.ParseInt(strings.TrimSuffix(v, " kB"), 10, 64)
		}
	}
	if !isMirrord {
		return 0
	}
	return hwm
}

// TestLayeredGoChildFiles: a static Go program started by a preloaded
// program (it runs in the sandbox through layer-exec, in the same
// session) sees the target's files by the session's rules: it reads and
// lists them, not_found and local rules hold, and in write mode its
// writes, renames and removals reach the target. Before, its file calls
// all stayed on this machine.
func TestLayeredGoChildFiles(t *testing.T) {
	f := newFixture(t)
	f.startAgent()
	fsclient := buildFSClient(t)
	dir, inPod := podOnlyDir(t, f)
	mustWrite(t, inPod+"/config.yaml", "pod: config\n")
	mustWrite(t, inPod+"/secret", "not for you")
	mustWrite(t, inPod+"/old.txt", "old")
	mustWrite(t, inPod+"/local.txt", "remote version")
	mustWrite(t, dir+"/local.txt", "local version")
	cfg := writeConfig(t, fmt.Sprintf(`{"feature": {"fs": {"mode": "write", "local": ["^%s/local\\.txt$"], "not_found": ["^%s/secret"]}}}`, dir, dir))
	ops := []string{
		"read " + dir + "/config.yaml",
		"ls " + dir,
		"read " + dir + "/secret",
		"read " + dir + "/local.txt",
		"write " + dir + "/new.txt from the Go child",
		"rename " + dir + "/new.txt " + dir + "/moved.txt",
		"rm " + dir + "/old.txt",
	}
	// bash is preloaded; the Go program it starts goes through layer-exec.
	script := "echo parent: $(cat " + dir + "/config.yaml); exec " + fsclient + ` "$@"`
	out, err := f.mirrord(ctx(t), nil, append([]string{"--engine", "preload", "-f", cfg, "--", "bash", "-c", script, "bash"}, ops...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	mustContain(t, out, "parent: pod: config")
	checkOps(t, out, ops, map[string]string{
		ops[0]: "pod: config",
		ops[1]: "config.yaml,local.txt,old.txt,secret",
		ops[2]: "error ENOENT",
		ops[3]: "local version",
		ops[4]: "ok",
		ops[5]: "ok",
		ops[6]: "ok",
	})
	if b, err := os.ReadFile(inPod + "/moved.txt"); string(b) != "from the Go child" {
		t.Errorf("the target lacks the Go child's file: %q, %v", b, err)
	}
	if _, err := os.Stat(inPod + "/old.txt"); err == nil {
		t.Error("the Go child's rm did not reach the target")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the Go child changed this machine's directory: %v", entries)
	}
}
