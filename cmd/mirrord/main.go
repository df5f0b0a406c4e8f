// Command mirrord runs a local process in the context of a Kubernetes pod.
package main

import (
	"os"

	"github.com/mirrord-go/mirrord/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
