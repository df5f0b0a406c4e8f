package cli

import (
	"bytes"
	"net"
	"strings"
	"testing"

	"github.com/mirrord-go/mirrord/protocol"
)

func TestDumpFormatData(t *testing.T) {
	for _, tc := range []struct {
		in   []byte
		want string
	}{
		{[]byte("hello\n"), "## Connection ID 3: 6 bytes\nData:\nhello\n\n"},
		{[]byte("GET / HTTP/1.1"), "## Connection ID 3: 14 bytes\nData:\nGET / HTTP/1.1\n"},
		{[]byte{0xff, 0x00, 0x10}, "## Connection ID 3: 3 bytes\nData (hex):\nff0010\n"},
		// Half of "é": not UTF-8 on its own.
		{[]byte{0xc3}, "## Connection ID 3: 1 bytes\nData (hex):\nc3\n"},
		{nil, "## Connection ID 3: 0 bytes\n"},
	} {
		if got := formatData(3, tc.in); got != tc.want {
			t.Errorf("formatData(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestDumpServe runs two connections through the dumper: each is
// announced with its source and destination, its bytes follow, and its
// close; IDs count up in arrival order.
func TestDumpServe(t *testing.T) {
	var out bytes.Buffer
	d := &dumper{w: &out}
	for _, tc := range []struct {
		inc  protocol.Incoming
		data string
	}{
		{protocol.Incoming{Port: 80, Source: "10.0.0.9:51000", Dest: "10.0.0.5:80", Mirror: true}, "first"},
		// An agent that does not send dest: the port is still shown.
		{protocol.Incoming{Port: 8080, Source: "[fd00::9]:51001", Mirror: true}, "second"},
	} {
		local, remote := net.Pipe()
		done := make(chan struct{})
		go func() { d.print(d.opened(&tc.inc), local); close(done) }()
		remote.Write([]byte(tc.data))
		remote.Close()
		<-done
	}
	want := "## New TCP connection established: Connection ID 0 from 10.0.0.9:51000 to 10.0.0.5:80\n" +
		"## Connection ID 0: 5 bytes\nData:\nfirst\n" +
		"## Connection ID 0 closed\n" +
		"## New TCP connection established: Connection ID 1 from [fd00::9]:51001 to :8080\n" +
		"## Connection ID 1: 6 bytes\nData:\nsecond\n" +
		"## Connection ID 1 closed\n"
	if out.String() != want {
		t.Errorf("dump output:\n%s\nwant:\n%s", out.String(), want)
	}

	// After stop (the session is being torn down) nothing more is
	// printed, not even the close of a connection the teardown cuts.
	d.stop()
	out.Reset()
	local, remote := net.Pipe()
	remote.Close()
	d.print(d.opened(&protocol.Incoming{Port: 80, Source: "10.0.0.9:51002", Mirror: true}), local)
	if out.Len() != 0 {
		t.Errorf("output after stop: %q", out.String())
	}
}

func TestDumpPorts(t *testing.T) {
	got, err := parsePorts([]string{"80", "8080", "80", " 443"})
	if err != nil || len(got) != 3 || got[0] != 80 || got[1] != 8080 || got[2] != 443 {
		t.Errorf("parsePorts: %v, %v", got, err)
	}
}

// TestDumpErrors: bad input is refused before anything starts, naming
// the flag.
func TestDumpErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"dump", "--agent-addr", "127.0.0.1:1"}, "-p/--ports"},
		{[]string{"dump", "--agent-addr", "127.0.0.1:1", "-p", "0"}, `-p/--ports "0"`},
		{[]string{"dump", "--agent-addr", "127.0.0.1:1", "-p", "65536"}, `-p/--ports "65536"`},
		{[]string{"dump", "--agent-addr", "127.0.0.1:1", "-p", "http"}, `-p/--ports "http"`},
		{[]string{"dump", "-p", "80"}, "-t/--target"},
		{[]string{"dump", "-p", "80", "-t", "targetless"}, "-t/--target"},
		{[]string{"dump", "-p", "80", "-t", "nokind/x"}, "from --target"},
		{[]string{"dump", "-p", "80", "--steal"}, "--steal"},
	} {
		var stdout, stderr bytes.Buffer
		env := &Env{Stdout: &stdout, Stderr: &stderr, Lookup: func(string) (string, bool) { return "", false }, Args: tc.args}
		code := run(tc.args, env)
		if code == 0 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want it to name %q", tc.args, code, stderr.String(), tc.want)
		}
		if stdout.Len() != 0 {
			t.Errorf("%v: stdout %q", tc.args, stdout.String())
		}
	}
}
