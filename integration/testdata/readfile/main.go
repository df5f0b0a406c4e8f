// Command readfile prints the files named on its command line (a small Go
// program for `go run` under mirrord).
package main

import (
	"fmt"
	"os"
)

func main() {
	for _, name := range os.Args[1:] {
		b, err := os.ReadFile(name)
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		fmt.Printf("%s: %s", name, b)
	}
}
