package goshim_test

import (
	"context"
	"fmt"
	"os"

	"github.com/mirrord-go/mirrord/goshim"
)

// The life of a sandbox as `mirrord exec` drives it. The mirrord binary
// must also dispatch its hidden command:
//
//	case goshim.HelperCommand: os.Exit(goshim.HelperMain())
func Example() {
	sb, err := goshim.Start(goshim.Spec{
		Path:       "app",
		Args:       []string{"app", "--port", "8080"},
		Env:        os.Environ(),
		ResolvConf: "nameserver " + goshim.DNSAddr4.String() + "\n",
		Hostname:   "api-7d9c",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err) // says which sysctl or device mode to fix
		return
	}
	defer sb.Close()

	_ = sb.TunFD() // hand to the netstack before Go; do not close it

	stop := sb.ForwardSignals(context.Background())
	defer stop()
	if err := sb.Go(); err != nil {
		fmt.Fprintln(os.Stderr, err) // e.g. exec: "app": executable file not found in $PATH
	}
	code, _ := sb.Wait() // 127 after a not-found error above
	fmt.Println("exit code", code)
}
