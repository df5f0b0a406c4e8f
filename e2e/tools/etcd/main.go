// Command etcd is etcd v3.5's server entry point (etcdmain.Main), built from
// the Go module proxy for the e2e processes cluster.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
