// Package kubepkg is a Go package whose test passes only in the context of
// the e2e fixture's py-serv pods: `go test -exec mirrord` is how it runs.
package kubepkg

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func TestInCluster(t *testing.T) {
	if got := os.Getenv("APP_GREETING"); got != "hello from py-serv" {
		t.Fatalf("APP_GREETING = %q: not running with the pod's environment", got)
	}
	b, err := os.ReadFile("/app/config.json")
	if err != nil || !strings.Contains(string(b), "e2e test app's config file") {
		t.Fatalf("/app/config.json: %q, %v", b, err)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://backend:8080/health") // ClusterIP only, short name
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if strings.TrimSpace(string(body)) != "ok" {
		t.Fatalf("backend /health = %q", body)
	}
}
