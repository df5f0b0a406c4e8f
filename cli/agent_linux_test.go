package cli

import (
	"strings"
	"testing"
)

// TestAgentWithoutToken: an agent started by hand without
// MIRRORD_AGENT_TOKEN serves anyone who reaches its port; on an address
// other machines reach, it says so on stderr. On loopback, or with a
// token, it says nothing.
func TestAgentWithoutToken(t *testing.T) {
	for _, tc := range []struct {
		listen, token string
		warn          bool
	}{
		{"0.0.0.0:0", "", true},
		{"[::]:0", "", true},
		{"127.0.0.1:0", "", false},
		{"0.0.0.0:0", "a-token", false},
	} {
		env := map[string]string{}
		if tc.token != "" {
			env["MIRRORD_AGENT_TOKEN"] = tc.token
		}
		r := runCLI(t, env, "agent", "--listen", tc.listen, "--first-client-timeout", "50ms")
		if !strings.HasPrefix(r.stdout, "agent listening on ") {
			t.Fatalf("--listen %s: the agent did not start (exit %d): %s%s", tc.listen, r.code, r.stdout, r.stderr)
		}
		if warned := strings.Contains(r.stderr, "without a session token"); warned != tc.warn {
			t.Errorf("--listen %s, token %q: warned %v, want %v; stderr:\n%s", tc.listen, tc.token, warned, tc.warn, r.stderr)
		}
		if tc.token != "" && strings.Contains(r.stdout+r.stderr, tc.token) {
			t.Errorf("the token is in the agent's output:\n%s%s", r.stdout, r.stderr)
		}
	}
}
