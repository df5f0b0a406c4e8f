package goshim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Modes of the test binary when it runs as the helper or as a program in
// the sandbox (the test binary stands in for the mirrord binary).
const (
	modeUDP     = "goshim-test-udp"     // send one UDP datagram to udpTarget
	modeNetInfo = "goshim-test-netinfo" // print the interfaces as Go sees them
	modeFG      = "goshim-test-fg"      // print whether we hold the terminal
	modeParent  = "goshim-test-parent"  // act as mirrord: run a sandbox, then hang
	modeRun     = "goshim-test-run"     // act as `mirrord exec`: run argv[2:] (manual checks)
)

// udpTarget is in TEST-NET-2 (RFC 5737): inside the sandbox it is routed
// into the TUN device, which the test reads; nothing leaves the machine.
const (
	udpTarget  = "198.51.100.1:9"
	udpPayload = "mirrord-goshim-test"
)

func TestMain(m *testing.M) {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case HelperCommand:
			os.Exit(HelperMain())
		case modeUDP:
			os.Exit(sendUDP())
		case modeNetInfo:
			os.Exit(printNetInfo())
		case modeFG:
			os.Exit(printForeground())
		case modeParent:
			os.Exit(runParent())
		case modeRun:
			os.Exit(runCommand(os.Args[2:]))
		case modeNet:
			os.Exit(netProgram(os.Args[2:]))
		case modeFiles:
			os.Exit(filesProgram(os.Args[2:]))
		case modePeers:
			os.Exit(peersProgram(os.Args[2:]))
		case modeUnix:
			os.Exit(unixProgram(os.Args[2:]))
		}
	}
	os.Exit(m.Run())
}

func sendUDP() int {
	c, err := net.Dial("udp4", udpTarget)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer c.Close()
	if _, err := c.Write([]byte(udpPayload)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func printNetInfo() int {
	ifs, err := net.Interfaces()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs()
		fmt.Printf("%s mtu=%d up=%t addrs=%v\n", ifc.Name, ifc.MTU, ifc.Flags&net.FlagUp != 0, addrs)
	}
	return 0
}

func printForeground() int {
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	fmt.Printf("foreground=%t\n", err == nil && pgrp == unix.Getpgrp())
	return 0
}

// runParent starts `sleep 300` in a sandbox, prints its pid and waits to
// be killed, like a mirrord process that dies with its program running.
func runParent() int {
	s, err := Start(Spec{Path: "/bin/sleep", Args: []string{"sleep", "300"}}, WithStdio(nil, nil, os.Stderr))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := s.Go(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(s.Pid())
	// Keep the runtime destroying threads meanwhile: the program must not
	// die with any thread but the one that started it (which stays locked).
	for {
		done := make(chan struct{})
		go func() {
			runtime.LockOSThread() // exits locked: the thread is destroyed
			close(done)
		}()
		<-done
		time.Sleep(time.Millisecond)
	}
}

// runCommand runs argv in a sandbox with mirrord's stdio and signal
// forwarding, as `mirrord exec` will; for trying terminal behaviour by hand:
//
//	go test -c -o /tmp/goshim.test ./goshim && /tmp/goshim.test goshim-test-run sh
func runCommand(argv []string) int {
	if len(argv) == 0 {
		fmt.Fprintln(os.Stderr, "usage: goshim-test-run PROGRAM [ARG...]")
		return 2
	}
	s, err := Start(Spec{Path: argv[0], Args: argv, Env: os.Environ(), Hostname: "sandbox"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer s.Close()
	defer s.ForwardSignals(context.Background())()
	if err := s.Go(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	code, err := s.Wait()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	fmt.Fprintf(os.Stderr, "[goshim-test-run: exit code %d]\n", code)
	return code
}

// startSandbox starts spec, skipping the test where the machine cannot
// host a sandbox at all.
func startSandbox(t *testing.T, spec Spec, opts ...Option) *Sandbox {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN device on this machine: %v", err)
	}
	begin := time.Now()
	s, err := Start(spec, opts...)
	if errors.Is(err, ErrUserNamespace) || errors.Is(err, ErrTUN) {
		t.Skipf("this machine cannot host a sandbox: %v", err)
	}
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Logf("Start took %v", time.Since(begin))
	t.Cleanup(func() { s.Close() })
	return s
}

const testPath = "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"

func shSpec(script string) Spec {
	return Spec{Path: "/bin/sh", Args: []string{"sh", "-c", script}, Env: []string{testPath}}
}

// run runs spec to completion and returns its exit code and output.
func run(t *testing.T, spec Spec) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	s := startSandbox(t, spec, WithStdio(nil, &out, &errOut))
	if err := s.Go(); err != nil {
		t.Fatalf("Go: %v", err)
	}
	code, err := s.Wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if errOut.Len() > 0 {
		t.Logf("stderr: %s", errOut.String())
	}
	return code, out.String(), errOut.String()
}

func TestExitCode(t *testing.T) {
	t.Parallel()
	for _, want := range []int{0, 7, 255} {
		code, _, _ := run(t, shSpec(fmt.Sprintf("exit %d", want)))
		if code != want {
			t.Errorf("exit %d: got exit code %d", want, code)
		}
	}
}

func TestSignalExitCode(t *testing.T) {
	t.Parallel()
	// The program kills itself: the status is the shell-style 128+n.
	if code, _, _ := run(t, shSpec("kill -TERM $$; sleep 5")); code != 128+int(syscall.SIGTERM) {
		t.Errorf("self-killed with SIGTERM: got exit code %d, want %d", code, 128+int(syscall.SIGTERM))
	}

	s := startSandbox(t, shSpec("exec sleep 30"), WithStdio(nil, nil, nil))
	if err := s.Go(); err != nil {
		t.Fatalf("Go: %v", err)
	}
	if err := s.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	if code, _ := s.Wait(); code != 128+int(syscall.SIGKILL) {
		t.Errorf("Signal(SIGKILL): got exit code %d, want %d", code, 128+int(syscall.SIGKILL))
	}
	if err := s.Signal(syscall.SIGTERM); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("Signal after exit: got %v, want os.ErrProcessDone", err)
	}
}

func TestNetwork(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	code, out, _ := run(t, Spec{Path: exe, Args: []string{exe, modeNetInfo}})
	if code != 0 {
		t.Fatalf("netinfo exited %d", code)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		name, _, _ := strings.Cut(l, " ")
		lines[name] = l
	}
	if len(lines) != 2 {
		t.Errorf("want exactly lo and %s in the sandbox, got:\n%s", TUNName, out)
	}
	if !strings.Contains(lines["lo"], "up=true") {
		t.Errorf("lo is not up: %q", lines["lo"])
	}
	tun := lines[TUNName]
	for _, want := range []string{fmt.Sprintf("mtu=%d", DefaultMTU), "up=true", SandboxAddr4.String() + "/32"} {
		if !strings.Contains(tun, want) {
			t.Errorf("%s: missing %q in %q", TUNName, want, tun)
		}
	}
	if ipv6Enabled() && !strings.Contains(tun, SandboxAddr6.String()+"/128") {
		t.Errorf("%s: missing %s/128 in %q", TUNName, SandboxAddr6, tun)
	}

	// The routing table, through /proc (works without iproute2).
	_, routes, _ := run(t, shSpec("cat /proc/net/route"))
	if !hasDefaultRoute(routes, TUNName) {
		t.Errorf("no IPv4 default route via %s in /proc/net/route:\n%s", TUNName, routes)
	}
	if ipv6Enabled() {
		_, routes6, _ := run(t, shSpec("cat /proc/net/ipv6_route"))
		if !hasDefaultRoute6(routes6, TUNName) {
			t.Errorf("no IPv6 default route via %s:\n%s", TUNName, routes6)
		}
	}

	if _, err := exec.LookPath("ip"); err != nil {
		t.Log("iproute2 not installed: skipping the `ip` checks")
		return
	}
	_, ipOut, _ := run(t, shSpec("ip -o link show "+TUNName+"; ip route show default"))
	for _, want := range []string{"mtu 65520", "UP", "default dev " + TUNName} {
		if !strings.Contains(ipOut, want) {
			t.Errorf("ip output lacks %q:\n%s", want, ipOut)
		}
	}
}

// hasDefaultRoute looks for "iface 00000000 ... mask 00000000" in
// /proc/net/route.
func hasDefaultRoute(table, iface string) bool {
	for _, l := range strings.Split(table, "\n")[1:] {
		f := strings.Fields(l)
		if len(f) >= 8 && f[0] == iface && f[1] == "00000000" && f[7] == "00000000" {
			return true
		}
	}
	return false
}

// hasDefaultRoute6 looks for ::/0 via iface in /proc/net/ipv6_route.
func hasDefaultRoute6(table, iface string) bool {
	for _, l := range strings.Split(table, "\n") {
		f := strings.Fields(l)
		if len(f) == 10 && f[0] == strings.Repeat("0", 32) && f[1] == "00" && f[9] == iface {
			return true
		}
	}
	return false
}

func ipv6Enabled() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/disable_ipv6")
	return err == nil && strings.TrimSpace(string(b)) == "0"
}

func TestEtcFilesAndHostname(t *testing.T) {
	t.Parallel()
	hostResolv, _ := os.ReadFile("/etc/resolv.conf")
	hostHosts, _ := os.ReadFile("/etc/hosts")
	hostName, _ := os.Hostname()

	spec := shSpec("cat /etc/resolv.conf; echo ===; cat /etc/hosts; echo ===; cat /proc/sys/kernel/hostname; echo ===; uname -n")
	spec.ResolvConf = "nameserver 198.18.0.53\nsearch staging.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
	spec.Hosts = "127.0.0.1 localhost\n198.18.7.7 db.internal\n"
	spec.Hostname = "api-7d9c"
	code, out, _ := run(t, spec)
	if code != 0 {
		t.Fatalf("exit code %d", code)
	}
	parts := strings.Split(out, "===\n")
	if len(parts) != 4 {
		t.Fatalf("unexpected output:\n%s", out)
	}
	if parts[0] != spec.ResolvConf {
		t.Errorf("/etc/resolv.conf in sandbox = %q, want %q", parts[0], spec.ResolvConf)
	}
	if parts[1] != spec.Hosts {
		t.Errorf("/etc/hosts in sandbox = %q, want %q", parts[1], spec.Hosts)
	}
	for _, got := range parts[2:] {
		if strings.TrimSpace(got) != spec.Hostname {
			t.Errorf("hostname in sandbox = %q, want %q", strings.TrimSpace(got), spec.Hostname)
		}
	}

	if now, _ := os.ReadFile("/etc/resolv.conf"); !bytes.Equal(now, hostResolv) {
		t.Errorf("host /etc/resolv.conf changed to %q", now)
	}
	if now, _ := os.ReadFile("/etc/hosts"); !bytes.Equal(now, hostHosts) {
		t.Errorf("host /etc/hosts changed to %q", now)
	}
	if now, _ := os.Hostname(); now != hostName {
		t.Errorf("host name changed to %q", now)
	}
}

func TestEnvAndDir(t *testing.T) {
	t.Parallel()
	env := []string{testPath, "FOO=bar baz", "EMPTY=", "MIRRORD_X=1"}
	// env(1), found through the PATH in env, prints exactly its environ.
	code, out, _ := run(t, Spec{Path: "env", Args: []string{"env"}, Env: env})
	if code != 0 {
		t.Fatalf("env exited %d", code)
	}
	if got := strings.Split(strings.TrimSuffix(out, "\n"), "\n"); !slicesEqual(got, env) {
		t.Errorf("environment in sandbox = %q, want exactly %q", got, env)
	}

	dir := t.TempDir()
	spec := shSpec("pwd")
	spec.Dir = dir
	if _, out, _ := run(t, spec); strings.TrimSpace(out) != dir {
		t.Errorf("working directory = %q, want %q", strings.TrimSpace(out), dir)
	}
}

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCommandNotFound(t *testing.T) {
	t.Parallel()
	s := startSandbox(t, Spec{Path: "mirrord-no-such-command", Env: []string{testPath}}, WithStdio(nil, nil, nil))
	err := s.Go()
	if !errors.Is(err, exec.ErrNotFound) || !strings.Contains(err.Error(), "mirrord-no-such-command") {
		t.Errorf("Go: got %v, want exec.ErrNotFound naming the command", err)
	}
	t.Logf("Go error: %v", err)
	if code, _ := s.Wait(); code != 127 {
		t.Errorf("exit code %d, want 127", code)
	}

	// A file that exists but may not be executed: 126, like a shell.
	notExec := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s = startSandbox(t, Spec{Path: notExec}, WithStdio(nil, nil, nil))
	if err := s.Go(); err == nil || !strings.Contains(err.Error(), "permission denied") {
		t.Errorf("Go on a non-executable file: got %v", err)
	}
	if code, _ := s.Wait(); code != 126 {
		t.Errorf("non-executable: exit code %d, want 126", code)
	}
}

func TestTUNReceivesPackets(t *testing.T) {
	t.Parallel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var errOut bytes.Buffer
	s := startSandbox(t, Spec{Path: exe, Args: []string{exe, modeUDP}}, WithStdio(nil, nil, &errOut))
	// Read through a dup: the Sandbox owns TunFD.
	dup, err := unix.FcntlInt(uintptr(s.TunFD()), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	tun := os.NewFile(uintptr(dup), "tun") // non-blocking: deadlines work
	defer tun.Close()
	if err := s.Go(); err != nil {
		t.Fatalf("Go: %v", err)
	}
	if code, _ := s.Wait(); code != 0 {
		t.Fatalf("sender exited %d: %s", code, errOut.String())
	}
	if err := tun.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65536)
	for {
		n, err := tun.Read(buf)
		if err != nil {
			t.Fatalf("no UDP packet to %s read from the TUN fd: %v", udpTarget, err)
		}
		if src, ok := matchUDP(buf[:n]); ok {
			if src != SandboxAddr4.String() {
				t.Errorf("packet source %s, want %s", src, SandboxAddr4)
			}
			return
		}
		// Other traffic (IPv6 router solicitations, ...) is fine.
	}
}

// matchUDP reports whether pkt is the test's IPv4 UDP datagram, and its
// source address.
func matchUDP(pkt []byte) (src string, ok bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 || pkt[9] != unix.IPPROTO_UDP {
		return "", false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if len(pkt) < ihl+8 {
		return "", false
	}
	host, port, _ := net.SplitHostPort(udpTarget)
	wantPort, _ := strconv.Atoi(port)
	dst := net.IP(pkt[16:20]).String()
	dport := int(binary.BigEndian.Uint16(pkt[ihl+2:]))
	if dst != host || dport != wantPort || string(pkt[ihl+8:]) != udpPayload {
		return "", false
	}
	return net.IP(pkt[12:16]).String(), true
}

func TestCloseKillsEverything(t *testing.T) {
	t.Parallel()
	// Before Go: the helper itself must go.
	s := startSandbox(t, shSpec("exit 0"), WithStdio(nil, nil, nil))
	pid := s.Pid()
	s.Close()
	if alive(pid) {
		t.Errorf("helper %d still alive after Close", pid)
	}

	// After Go: the program and the background children in its group.
	s = startSandbox(t, shSpec("sleep 300 & sleep 300 & wait"), WithStdio(nil, nil, nil))
	if err := s.Go(); err != nil {
		t.Fatalf("Go: %v", err)
	}
	pid = s.Pid()
	waitFor(t, "the program's children", func() bool { return len(groupMembers(pid)) >= 3 })
	s.Close()
	if code, _ := s.Wait(); code != 128+int(syscall.SIGKILL) {
		t.Errorf("exit code after Close = %d, want %d", code, 128+int(syscall.SIGKILL))
	}
	waitFor(t, "the process group to be gone", func() bool { return len(groupMembers(pid)) == 0 })
	if s.TunFD() != -1 {
		t.Errorf("TunFD still %d after Close", s.TunFD())
	}
}

func TestProgramDiesWithMirrord(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN device on this machine: %v", err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(exe, modeParent)
	parent.Stderr = os.Stderr
	stdout, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer parent.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		parent.Wait()
		t.Skipf("the parent could not start a sandbox: %v", err) // it printed why
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	time.Sleep(200 * time.Millisecond) // let the parent retire a few threads
	if !alive(pid) {
		t.Fatalf("program %d died while its parent was alive", pid)
	}
	parent.Process.Kill()
	parent.Wait()
	waitFor(t, "the program to die with its parent", func() bool { return !alive(pid) })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	st, err := readStat(pid)
	return err == nil && st.state != 'Z'
}

type procStat struct {
	state byte
	pgrp  int
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name may contain spaces: fields start after the last ')'.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	pgrp, _ := strconv.Atoi(f[2])
	return procStat{state: f[0][0], pgrp: pgrp}, nil
}

// groupMembers lists the live processes of process group pgrp.
func groupMembers(pgrp int) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readStat(pid); err == nil && st.pgrp == pgrp && st.state != 'Z' {
			pids = append(pids, pid)
		}
	}
	return pids
}

func TestForwardSignals(t *testing.T) {
	// Not parallel: it signals the test process itself.
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	s := startSandbox(t, shSpec(`trap 'exit 42' USR1; echo ready; while :; do sleep 0.05; done`), WithStdio(nil, w, nil))
	w.Close()
	stop := s.ForwardSignals(context.Background())
	defer stop()
	if err := s.Go(); err != nil {
		t.Fatalf("Go: %v", err)
	}
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("program did not get ready: %q, %v", line, err)
	}
	if err := unix.Kill(os.Getpid(), unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if code, _ := s.Wait(); code != 42 {
		t.Errorf("exit code %d, want 42 from the USR1 trap", code)
	}
}

// TestForeground runs only on a terminal (e.g. under `script -qc 'go test
// ...'`): the program must hold the terminal while it runs, and mirrord
// must get it back afterwards.
func TestForeground(t *testing.T) {
	pgrp, err := unix.IoctlGetInt(0, unix.TIOCGPGRP)
	if err != nil || pgrp != unix.Getpgrp() || isPipe(os.Stdout) {
		t.Skip("stdin is not a terminal with this process in the foreground")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	s := startSandbox(t, Spec{Path: exe, Args: []string{exe, modeFG}}, WithStdio(os.Stdin, out, os.Stderr))
	if err := s.Go(); err != nil {
		t.Fatalf("Go: %v", err)
	}
	if code, _ := s.Wait(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
	got, _ := os.ReadFile(out.Name())
	if string(got) != "foreground=true\n" {
		t.Errorf("program: %q, want foreground=true", got)
	}
	if now, _ := unix.IoctlGetInt(0, unix.TIOCGPGRP); now != unix.Getpgrp() {
		t.Errorf("terminal foreground group is %d after exit, want ours (%d)", now, unix.Getpgrp())
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "prog")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := lookPath("prog", []string{"PATH=/nonexistent:" + dir, "PATH=/ignored"})
	if err != nil || got != bin {
		t.Errorf("lookPath via env PATH = %q, %v; want %q", got, err, bin)
	}
	if _, err := lookPath("prog", []string{"PATH=/nonexistent"}); !errors.Is(err, exec.ErrNotFound) {
		t.Errorf("lookPath missing: %v, want exec.ErrNotFound", err)
	}
	if got, err := lookPath(bin, nil); err != nil || got != bin {
		t.Errorf("lookPath absolute = %q, %v", got, err)
	}
}

func TestProtocolErrors(t *testing.T) {
	for _, sentinel := range []error{ErrUserNamespace, ErrTUN, exec.ErrNotFound} {
		frame := encodeError(fmt.Errorf("context\nsecond line: %w", sentinel))
		typ, payload, err := readFrame(bytes.NewReader(frame))
		if err != nil || typ != frameError {
			t.Fatalf("readFrame: %q, %v", typ, err)
		}
		got := decodeError(payload)
		if !errors.Is(got, sentinel) {
			t.Errorf("decoded %v does not wrap %v", got, sentinel)
		}
		if strings.Contains(got.Error(), "\n") {
			t.Errorf("error text has a newline: %q", got)
		}
	}
	if _, _, err := readFrame(bytes.NewReader(encodeFrame(frameSetup, []byte("abc"))[:6])); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: %v", err)
	}
}

func TestBindFileMissingTarget(t *testing.T) {
	dir := t.TempDir()
	dangling := filepath.Join(dir, "resolv.conf")
	if err := os.Symlink(filepath.Join(dir, "stub-resolv.conf"), dangling); err != nil {
		t.Fatal(err)
	}
	// Neither case reaches mount(2): the target is checked first.
	err := bindFile(bindMount{Source: "/dev/null", Target: dangling})
	if err == nil || !strings.Contains(err.Error(), "stub-resolv.conf") || !strings.Contains(err.Error(), "must exist") {
		t.Errorf("dangling symlink: got %v, want an error naming the missing file", err)
	}
	if err := bindFile(bindMount{Source: "/dev/null", Target: filepath.Join(dir, "hostname"), Optional: true}); err != nil {
		t.Errorf("missing optional target: got %v, want it skipped", err)
	}
}
