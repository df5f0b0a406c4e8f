// Package samplepkg is a user's package whose tests only pass with the
// pod's environment, DNS and network: the integration tests run them with
// `go test -exec mirrord`.
package samplepkg

import (
	"io"
	"net/http"
	"os"
	"time"
)

// Fetch returns the body of the service the configuration names.
func Fetch() (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + os.Getenv("SAMPLE_SERVICE") + ":8080/")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
