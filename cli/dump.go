package cli

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/mirrord-go/mirrord/config"
	"github.com/mirrord-go/mirrord/protocol"
)

// DumpCmd is `mirrord dump`.
type DumpCmd struct {
	ConfigFlags
	TargetFlags
	AgentFlags
	KubeFlags
	CompatFlags
	AgentAddr string   `name:"agent-addr" env:"MIRRORD_AGENT_ADDR" placeholder:"HOST:PORT" help:"Use the agent already running at this address instead of starting one (config: connect_tcp)."`
	Ports     []string `short:"p" name:"ports" aliases:"port" placeholder:"PORT" help:"A port of the target whose incoming traffic to print (repeatable, or comma-separated)."`
}

// parsePorts checks the -p values: TCP ports 1-65535, each once.
func parsePorts(args []string) ([]uint16, error) {
	if len(args) == 0 {
		return nil, errors.New("dump: give the target's ports to print with -p/--ports, e.g. -p 80 -p 8080")
	}
	var ports []uint16
	seen := map[uint16]bool{}
	for _, a := range args {
		n, err := strconv.ParseUint(strings.TrimSpace(a), 10, 16)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("-p/--ports %q: not a port; expected a number from 1 to 65535", a)
		}
		if p := uint16(n); !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}

// Run prints the target's incoming traffic on the ports until SIGINT or
// SIGTERM. The traffic is mirrored: the target's app still gets and
// answers every connection. The session (and with it the agent it
// started and the agent's redirect rules) ends when Run returns.
func (c *DumpCmd) Run(env *Env) error {
	ports, err := parsePorts(c.Ports)
	if err != nil {
		return err
	}
	var s []config.Setting
	s = append(s, c.TargetFlags.settings()...)
	s = append(s, c.AgentFlags.settings()...)
	s = append(s, c.KubeFlags.settings()...)
	s = append(s, c.CompatFlags.settings()...)
	prog := newProgress(env)
	cfg, err := loadConfig(env, prog, &c.ConfigFlags, s)
	if err != nil {
		return err
	}
	// A running agent (--agent-addr, connect_tcp) already has its target;
	// otherwise a targetless agent would see no incoming traffic at all.
	if cfg.Target.Targetless() && c.AgentAddr == "" && cfg.ConnectTCP == nil {
		return errors.New("dump: give the target whose incoming traffic to print with -t/--target (e.g. -t deploy/api)")
	}
	srv, err := startServing(env, cfg, prog, c.AgentAddr)
	if err != nil {
		return err
	}
	defer srv.close()
	ctx, sess := srv.ctx, srv.sess

	d := &dumper{w: env.Stdout}
	cancel, err := sess.Mirror(ctx, ports, d.serve)
	if err != nil {
		return fmt.Errorf("dump: %w", err)
	}
	prog.Info(fmt.Sprintf("mirroring ports %s of %s; press Ctrl+C to stop", portList(ports), sess.Via))
	select {
	case <-ctx.Done():
	case <-sess.Proxy.Done():
		err = errors.New("dump: lost the connection to the agent")
	}
	// Connections still open are cut by the teardown, not closed by
	// their peers: say nothing more about them.
	d.stop()
	cancel()
	return err
}

func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return strings.Join(s, ", ")
}

// dumper prints mirrored connections in upstream mirrord's `dump` format,
// so that what people grep for in its output works here too:
//
//	## New TCP connection established: Connection ID 0 from 10.0.0.9:51000 to 10.0.0.5:80
//	## Connection ID 0: 18 bytes
//	Data:
//	GET / HTTP/1.1 ...
//	## Connection ID 0 closed
//
// Connections are numbered from 0 in the order they arrive. Each event is
// written whole under one lock, so concurrent connections interleave by
// event, never inside one.
type dumper struct {
	w io.Writer

	mu      sync.Mutex
	next    uint64
	stopped bool
}

// printf writes one event unless the dump has stopped.
func (d *dumper) printf(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.stopped {
		fmt.Fprintf(d.w, format, args...)
	}
}

func (d *dumper) stop() {
	d.mu.Lock()
	d.stopped = true
	d.mu.Unlock()
}

// opened announces a connection and returns its ID.
func (d *dumper) opened(inc *protocol.Incoming) uint64 {
	dest := inc.Dest
	if dest == "" {
		// An older agent does not say; the port is all we know.
		dest = net.JoinHostPort("", strconv.Itoa(int(inc.Port)))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	id := d.next
	d.next++
	if !d.stopped {
		fmt.Fprintf(d.w, "## New TCP connection established: Connection ID %d from %s to %s\n", id, inc.Source, dest)
	}
	return id
}

// data prints one chunk as it arrived: as text when it is valid UTF-8,
// otherwise as hex. Chunks are what the agent read from the peer, so a
// multi-byte character split between two of them shows as hex.
func (d *dumper) data(id uint64, b []byte) {
	d.printf("%s", formatData(id, b))
}

func formatData(id uint64, b []byte) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "## Connection ID %d: %d bytes\n", id, len(b))
	switch {
	case len(b) == 0:
	case utf8.Valid(b):
		fmt.Fprintf(&sb, "Data:\n%s\n", b)
	default:
		fmt.Fprintf(&sb, "Data (hex):\n%s\n", hex.EncodeToString(b))
	}
	return sb.String()
}

func (d *dumper) closed(id uint64) {
	d.printf("## Connection ID %d closed\n", id)
}

// serve numbers one mirrored connection (it is called in the order the
// agent delivered them) and prints it in a goroutine of its own.
func (d *dumper) serve(inc *protocol.Incoming, conn net.Conn) {
	go d.print(d.opened(inc), conn)
}

// print prints connection id until its peer closes it. Nothing is written
// back: a mirrored connection's answers come from the target's app.
func (d *dumper) print(id uint64, conn net.Conn) {
	defer conn.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := conn.Read(buf)
		if n > 0 {
			d.data(id, buf[:n])
		}
		if err != nil {
			break
		}
	}
	d.closed(id)
}
