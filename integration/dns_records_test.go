package integration

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDNSRecords: lookups beyond getaddrinfo reach the target's DNS under
// both engines: glibc's res_query/res_search/res_send (SRV, TXT, MX from a C
// program; res_search applies the target's search domains), and the
// real tools that carry their own resolver (host, dig), which read
// /etc/resolv.conf and send the query themselves. This machine's DNS
// server knows none of these names.
func TestDNSRecords(t *testing.T) {
	for _, tool := range []string{"host", "dig", "gcc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing (make deps installs it): %v", tool, err)
		}
	}
	resquery := filepath.Join(t.TempDir(), "resquery")
	if out, err := exec.Command("gcc", "-O2", "-o", resquery, "testdata/resquery/resquery.c", "-lresolv").CombinedOutput(); err != nil {
		t.Fatalf("building resquery: %v\n%s", err, out)
	}
	f := newFixture(t)
	f.startAgent()
	short := strings.TrimSuffix(svcName, "."+podDomain) // found through the search domains
	script := strings.Join([]string{
		resquery + " query SRV " + svcName,
		resquery + " query TXT " + svcName,
		resquery + " query MX " + svcName,
		resquery + " search SRV " + short,
		resquery + " send MX " + svcName,
		"host -t SRV " + svcName,
		"echo dig: $(dig +short TXT " + svcName + ")",
	}, "; ")
	eachEngine(t, func(t *testing.T, engine ...string) {
		out, err := f.mirrord(ctx(t), nil, append(engine, "--", "sh", "-c", script)...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		mustContain(t, out,
			"SRV 0 5 8080 "+svcName+"\nTXT hello\nMX 10 mail."+svcName+"\nSRV 0 5 8080 "+svcName+"\nMX 10 mail."+svcName+"\n",
			svcName+" has SRV record 0 5 8080 "+svcName+".",
			`dig: "hello"`)
	})
}
