package integration

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// TestMusl: programs built against musl (Alpine's C library) get the
// target's DNS, network, files, env and hostname, run directly and as
// children of a preloaded shell. A static one runs in the sandbox (no
// libc to hook, like a Go program). A dynamic one gets the preload: musl's
// loader resolves the library's libc.so.6 to musl itself, so the hooks
// bind to musl's functions; it is also run with --engine netstack, which
// needs no C library at all.
func TestMusl(t *testing.T) {
	if _, err := exec.LookPath("musl-gcc"); err != nil {
		t.Fatalf("musl-gcc is missing (make deps installs musl-tools): %v", err)
	}
	dir := t.TempDir()
	bins := map[string]string{"static": filepath.Join(dir, "cclient-static"), "dynamic": filepath.Join(dir, "cclient-dynamic")}
	for kind, out := range bins {
		args := []string{"-O2", "-o", out, "testdata/cclient/cclient.c"}
		if kind == "static" {
			args = append([]string{"-static"}, args...)
		}
		if b, err := exec.Command("musl-gcc", args...).CombinedOutput(); err != nil {
			t.Fatalf("musl-gcc %s: %v\n%s", kind, err, b)
		}
	}
	f := newFixture(t)
	f.startAgent()
	file := f.podFiles + "/config.yaml" // only the target has it
	cfg := writeConfig(t, `{"feature": {"fs": {"mode": "read", "read_only": ["^`+f.podFiles+`"]}}}`)
	for kind, bin := range bins {
		t.Run(kind, func(t *testing.T) {
			want := []string{"dns " + svcIP, "tcp " + svcBody, "udp echo:ping", "file pod: config", "env " + secret, "hostname " + podHostname}
			out, err := f.mirrord(ctx(t), nil, "-f", cfg, "--", bin, svcName, file)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			mustContain(t, out, want...)
			if kind == "dynamic" {
				out, err := f.mirrord(ctx(t), nil, "--engine", "netstack", "-f", cfg, "--", bin, svcName, file)
				if err != nil {
					t.Fatalf("netstack: %v\n%s", err, out)
				}
				mustContain(t, out, want...)
			}
			// A child of a preloaded shell goes to the sandbox too.
			out, err = f.mirrord(ctx(t), nil, "--engine", "preload", "-f", cfg, "--", "bash", "-c", bin+" "+svcName+" "+file+"; true")
			if err != nil {
				t.Fatalf("as a child: %v\n%s", err, out)
			}
			mustContain(t, out, want...)
		})
	}
}
