package cli

import (
	"strings"
	"testing"
)

// TestAgentWithoutToken: an agent started by hand on an address other
// machines reach must have a session token (MIRRORD_AGENT_TOKEN): without
// one it refuses to start, naming the flag and the variable. On loopback
// (the default) it may run without one; the token never shows in its
// output.
func TestAgentWithoutToken(t *testing.T) {
	for _, tc := range []struct {
		listen, token string
		refused       bool
	}{
		{"0.0.0.0:0", "", true},
		{"[::]:0", "", true},
		{":0", "", true},
		{"127.0.0.1:0", "", false},
		{"[::1]:0", "", false},
		{"localhost:0", "", false},
		{"", "", false}, // the default: 127.0.0.1:0
		{"0.0.0.0:0", "a-token", false},
	} {
		env := map[string]string{}
		if tc.token != "" {
			env["MIRRORD_AGENT_TOKEN"] = tc.token
		}
		args := []string{"agent", "--first-client-timeout", "50ms"}
		if tc.listen != "" {
			args = append(args, "--listen", tc.listen)
		}
		r := runCLI(t, env, args...)
		started := strings.HasPrefix(r.stdout, "agent listening on ")
		if tc.refused {
			if started || r.code == 0 || !strings.Contains(r.stderr, "--listen "+tc.listen+": ") || !strings.Contains(r.stderr, "MIRRORD_AGENT_TOKEN") {
				t.Errorf("--listen %s without a token: exit %d, stdout %q, stderr %q; want a refusal naming the flag and MIRRORD_AGENT_TOKEN", tc.listen, r.code, r.stdout, r.stderr)
			}
			continue
		}
		if !started {
			t.Fatalf("--listen %q, token %q: the agent did not start (exit %d): %s%s", tc.listen, tc.token, r.code, r.stdout, r.stderr)
		}
		if tc.listen == "" && !strings.HasPrefix(r.stdout, "agent listening on 127.0.0.1:") {
			t.Errorf("the default listener: %q, want 127.0.0.1", r.stdout)
		}
		if tc.token != "" && strings.Contains(r.stdout+r.stderr, tc.token) {
			t.Errorf("the token is in the agent's output:\n%s%s", r.stdout, r.stderr)
		}
	}
}
