//go:build !linux || !(amd64 || arm64)

package preload

import "embed"

// lib is empty: mirrord builds the library for linux/amd64 and
// linux/arm64 only, and Library says so (ErrNotBuilt).
var lib embed.FS

const libName = "lib/none/libmirrord_layer.so"
