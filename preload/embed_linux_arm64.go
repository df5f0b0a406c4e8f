package preload

import "embed"

// lib is this architecture's build of the library (make puts it there);
// the README.md beside it keeps the directory, which go:embed needs, in git.
//
//go:embed lib/arm64
var lib embed.FS

const libName = "lib/arm64/libmirrord_layer.so"
