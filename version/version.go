// Package version holds the version of this mirrord build. The Makefile
// sets it with -ldflags "-X github.com/mirrord-go/mirrord/version.Version=...".
package version

// Version is the version of this build.
var Version = "0.1.0-dev"
