//go:build e2e

package e2e

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestIPv6 runs on a dual-stack cluster (the processes cluster is one
// wherever this machine has IPv6): under each engine, a program targeting
// a py-serv pod reaches an IPv6-only Service by its ClusterIP and by its
// name (an AAAA answer from cluster DNS, read by curl, getent and a raw
// UDP query to the DNS pod's IPv6 address), and a pod's IPv6 address;
// requests sent to the target pod's IPv6 address are stolen and mirrored.
func TestIPv6(t *testing.T) {
	c := newCluster(t)
	waitUntil(t, time.Minute, "both "+pyServ+" pods to be ready", func() bool { return len(c.fixturePods(t, pyServ)) == 2 })
	target := c.fixturePods(t, pyServ)[0]
	podIP6 := target.ipv6()
	if podIP6 == "" {
		t.Skip("the cluster is IPv4-only (E2E_IPV6=0, or this machine has IPv6 off): no IPv6 to test")
	}
	backends := c.fixturePods(t, backend)
	dnsPods := c.fixturePodsIn(t, "kube-system", "k8s-app=kube-dns")
	if len(backends) == 0 || len(dnsPods) == 0 || backends[0].ipv6() == "" || dnsPods[0].ipv6() == "" {
		t.Fatalf("the backend and CoreDNS pods have no IPv6 address on a dual-stack cluster: %+v %+v", backends, dnsPods)
	}

	// An IPv6-only Service in front of the backend: its name has only an
	// AAAA record.
	svc := "backend-v6-" + randomSuffix()
	c.apply(t, `apiVersion: v1
kind: Service
metadata: {name: `+svc+`, namespace: `+fixtureNamespace+`}
spec:
  ipFamilyPolicy: SingleStack
  ipFamilies: [IPv6]
  selector: {app: backend}
  ports: [{port: 8080, targetPort: http}]
`)
	t.Cleanup(func() { c.kubectl(t, "delete", "service", "-n", fixtureNamespace, svc, "--wait=false") })
	svcIP6 := c.serviceIP(t, fixtureNamespace, svc)
	if !strings.Contains(svcIP6, ":") {
		t.Fatalf("service %s got ClusterIP %s, want an IPv6 one", svc, svcIP6)
	}
	backendV4 := c.serviceIP(t, fixtureNamespace, backend)

	url := func(ip string) string { return "http://" + net.JoinHostPort(ip, "8080") + "/health" }
	script := `curl -sS -g --max-time 10 ` + url(svcIP6) + ` >/dev/null && echo clusterip6-ok
		curl -sS --max-time 10 http://` + svc + `:8080/health >/dev/null && echo name6-ok
		getent ahostsv6 ` + svc + ` | head -n 1
		curl -sS -g --max-time 10 ` + url(backends[0].ipv6()) + ` >/dev/null && echo pod6-ok
		python3 testdata/udpdns.py ` + dnsPods[0].ipv6() + ` ` + svc + `.` + fixtureNamespace + `.svc.cluster.local AAAA
		python3 testdata/udpdns.py ` + dnsPods[0].ipv6() + ` backend.` + fixtureNamespace + `.svc.cluster.local`
	want := []string{"clusterip6-ok", "name6-ok", svcIP6 + " ", "pod6-ok", "udp-dns6 " + svcIP6, "udp-dns " + backendV4}

	isPyServ := func(body string) bool { return strings.Contains(body, `"service": "py-serv"`) }
	podAddr := "[" + podIP6 + "]"
	for i, engine := range []string{"preload", "netstack"} {
		t.Run(engine+"/outgoing", func(t *testing.T) {
			out, err := c.mirrord(t, 3*time.Minute, "exec", "--engine", engine, "-t", "pod/"+target.Metadata.Name,
				"-n", fixtureNamespace, "--", "sh", "-c", script)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
		t.Run(engine+"/steal", func(t *testing.T) {
			port := 18191 + 2*i
			c.startLocalApp(t, engine, "pod/"+target.Metadata.Name, port, "local over IPv6 "+engine,
				`{"feature": {"network": {"incoming": {"mode": "steal", "port_mapping": [[`+strconv.Itoa(port)+`, 80]]}}}}`)
			waitUntil(t, 2*time.Minute, "a request to the pod's IPv6 address to be stolen", func() bool {
				body, _ := podGet(podAddr, "/", nil)
				return body == "local over IPv6 "+engine
			})
		})
		t.Run(engine+"/mirror", func(t *testing.T) {
			port := 18192 + 2*i
			out := c.startLocalApp(t, engine, "pod/"+target.Metadata.Name, port, "local answer (dropped)",
				`{"feature": {"network": {"incoming": {"mode": "mirror", "port_mapping": [[`+strconv.Itoa(port)+`, 80]]}}}}`)
			waitUntil(t, 2*time.Minute, "the local app to see a request mirrored from the pod's IPv6 address", func() bool {
				body, err := podGet(podAddr, "/", nil)
				if err != nil || !isPyServ(body) {
					t.Fatalf("a mirrored request was answered %q, %v; want py-serv's answer", body, err)
				}
				return strings.Contains(readFile(out), "GOT /")
			})
		})
	}
}
