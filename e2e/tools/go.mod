// Small tools the e2e harness builds for itself: imgbuild (container images
// as docker-archive tars, no Docker daemon or registry) and runcwrap (the runc
// wrapper for machines whose root lacks CAP_SYS_RESOURCE). A module of its own
// so the harness never changes the root module's go.mod. The k8s, etcd and
// coredns directories below are separate wrapper modules.
module github.com/mirrord-go/mirrord/e2e/tools

go 1.25.0

require github.com/google/go-containerregistry v0.22.1

require (
	github.com/klauspost/compress v1.19.2 // indirect
	github.com/opencontainers/go-digest v1.0.0 // indirect
	github.com/opencontainers/image-spec v1.1.1 // indirect
)
