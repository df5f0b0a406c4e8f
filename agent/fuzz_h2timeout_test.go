//go:build !(go1.27 && !http2legacy)

package agent

import (
	"time"
	_ "unsafe" // go:linkname
)

// h2GoAwayTimeout is how long golang.org/x/net/http2's server waits, after
// a GOAWAY for a connection error, for the client to close before it
// closes itself (a second): it no longer reads, so the client's close goes
// unseen. The tests of this package shorten it, for the HTTP/2 fuzz target,
// most of whose inputs end that way; it is set before any test starts, so
// no server reads it while it changes. (Go 1.27 serves HTTP/2 from
// net/http, where the fuzz target just runs slower.)
//
//go:linkname h2GoAwayTimeout golang.org/x/net/http2.goAwayTimeout
var h2GoAwayTimeout time.Duration

func init() { h2GoAwayTimeout = time.Millisecond }
