package intproxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestUnixMatcher(t *testing.T) {
	m, err := newUnixMatcher([]string{`bear.+`, `^/run/exact\.sock$`})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]bool{
		"/var/run/bear.sock": true, // unanchored, as upstream's regexes
		"/bear":              false,
		"/run/exact.sock":    true,
		"/run/exact.sock2":   false,
		"bear.sock":          false, // relative: this machine's directory
		"/tmp/\xffbear.x":    true,
		"":                   false,
	} {
		if got := m.match(path); got != want {
			t.Errorf("match(%q) = %t, want %t", path, got, want)
		}
	}
	if _, err := newUnixMatcher([]string{"("}); err == nil {
		t.Error("an invalid pattern was accepted")
	}
	var none unixMatcher
	if none.match("/anything") {
		t.Error("no patterns matched a path")
	}
}

// TestRelayUnix runs the whole chain but the program: an agent (without
// a target, so its root is this machine's) connects to a unix socket by
// path, and the proxy's one-shot listener relays to it.
func TestRelayUnix(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "app.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					fmt.Fprintf(c, "target %s\n", sc.Text())
				}
			}()
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := connectLocalAgent(t, ctx, `{"feature": {"network": {"outgoing": {"unix_streams": "app\\.sock$|missing"}}}}`)
	if !p.HasUnixStreams() {
		t.Fatal("HasUnixStreams is false with a pattern set")
	}

	relayPath, err := p.RelayUnix(ctx, sock)
	if err != nil || relayPath == "" {
		t.Fatalf("RelayUnix(%s) = %q, %v", sock, relayPath, err)
	}
	c, err := net.Dial("unix", relayPath)
	if err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	for _, msg := range []string{"one", "two"} {
		fmt.Fprintln(c, msg)
		line, err := r.ReadString('\n')
		if err != nil || line != "target "+msg+"\n" {
			t.Fatalf("through the relay: %q, %v", line, err)
		}
	}
	c.Close()
	// One-shot: the listener is gone once taken.
	if c, err := net.Dial("unix", relayPath); err == nil {
		c.Close()
		t.Error("the relay listener took a second connection")
	}

	if got, err := p.RelayUnix(ctx, filepath.Join(dir, "other.sock")); got != "" || err != nil {
		t.Errorf("a path not matched: %q, %v; want local", got, err)
	}
	_, err = p.RelayUnix(ctx, filepath.Join(dir, "missing.sock"))
	if !errors.Is(err, syscall.ENOENT) {
		t.Errorf("a missing socket: %v, want ENOENT", err)
	}
	// The layer protocol gives the preload the same answers.
	l := &layerServer{p: p}
	if got := l.routeUnix(ctx, filepath.Join(dir, "missing.sock")); got != fmt.Sprintf("E\t%d", int(syscall.ENOENT)) {
		t.Errorf("layer reply for a missing socket: %q", got)
	}
	if got := l.routeUnix(ctx, "/elsewhere.sock"); got != "L" {
		t.Errorf("layer reply for a local path: %q", got)
	}
	if got := l.routeUnix(ctx, sock); !strings.HasPrefix(got, "R\t/") {
		t.Errorf("layer reply for a remote path: %q", got)
	}
	relayDir := p.relays.dir
	p.Close()
	if m, _ := filepath.Glob(relayDir + "*"); len(m) != 0 {
		t.Errorf("Close left %v", m)
	}
}
