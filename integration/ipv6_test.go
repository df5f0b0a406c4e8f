package integration

import (
	"net"
	"testing"
)

// udp6Py sends "ping" over UDP to [argv1]:9000 and prints the answer.
const udp6Py = `
import socket, sys
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"ping", (sys.argv[1], 9000))
print("udp", u.recvfrom(100)[0].decode())
`

// TestOutgoingIPv6: a program reaches the pod's IPv6 network — a literal
// IPv6 address and a name that has only an AAAA record in the pod's DNS —
// over TCP and UDP, under both engines and as a static Go binary; getent
// shows the AAAA answer.
func TestOutgoingIPv6(t *testing.T) {
	f := newFixture(t)
	f.addIPv6(t)
	f.startAgent()
	literal := "http://" + net.JoinHostPort(svcIP6, "8080") + "/"
	eachEngine(t, func(t *testing.T, engine ...string) {
		for _, tc := range []struct {
			name string
			args []string
			want []string
		}{
			{"curl literal", []string{"curl", "-sS", "-g", "--max-time", "10", literal}, []string{svcBody6}},
			{"curl AAAA name", []string{"curl", "-sS", "--max-time", "10", "http://" + svc6Name + ":8080/"}, []string{svcBody6}},
			{"getent", []string{"getent", "ahostsv6", svc6Name}, []string{svcIP6}},
			{"python UDP", []string{"python3", "-c", udp6Py, svcIP6}, []string{"udp echo6:ping"}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				out, err := f.mirrord(ctx(t), nil, append(append(engine, "--"), tc.args...)...)
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
				mustContain(t, out, tc.want...)
			})
		}
	})
	t.Run("static go binary", func(t *testing.T) {
		out, err := f.mirrord(ctx(t), nil, "--", goclientBin, svc6Name)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out, "dns "+svcIP6, "tcp "+svcBody6, "udp echo6:ping")
	})
}
