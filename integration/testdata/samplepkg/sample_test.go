package samplepkg

import (
	"net"
	"os"
	"testing"
	"time"
)

func TestSeesThePod(t *testing.T) {
	if got := os.Getenv("SECRET_TOKEN"); got != "s3cr3t-token" {
		t.Fatalf("SECRET_TOKEN = %q: not running with the pod's environment", got)
	}
	addrs, err := net.LookupHost("svc.cluster.test")
	if err != nil || addrs[0] != "10.77.0.2" {
		t.Fatalf("svc.cluster.test = %v, %v", addrs, err)
	}
	// A file only the pod has (its path comes from the test that runs us).
	if name := os.Getenv("SAMPLE_POD_FILE"); name != "" {
		if b, err := os.ReadFile(name); err != nil || string(b) != "pod: config\n" {
			t.Fatalf("%s = %q, %v: not reading the pod's files", name, b, err)
		}
	}
	os.Setenv("SAMPLE_SERVICE", "svc.cluster.test")
	body, err := Fetch()
	if err != nil || body != "hello from svc" {
		t.Fatalf("Fetch = %q, %v", body, err)
	}
}

func TestSlow(t *testing.T) {
	if os.Getenv("SAMPLE_SLOW") != "" {
		time.Sleep(time.Hour)
	}
}

func TestFails(t *testing.T) {
	if os.Getenv("SAMPLE_FAIL") != "" {
		t.Fatal("failing as asked")
	}
}
