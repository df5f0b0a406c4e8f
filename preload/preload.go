package preload

import (
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
)

// ErrNotBuilt means this binary was built without the library (plain `go
// build` instead of `make build`).
var ErrNotBuilt = errors.New("this mirrord binary was built without the preload library (build it with `make build`)")

// Library returns the path of the preload library on this machine,
// extracting it into the cache directory (libraryDir) the first time. The file name
// carries a hash of the content, so binaries of different versions never
// share (or overwrite) one another's library.
func Library() (string, error) {
	data, err := lib.ReadFile(libName)
	if errors.Is(err, fs.ErrNotExist) {
		return "", ErrNotBuilt
	}
	if err != nil {
		return "", err
	}
	if err := checkArch(data, runtime.GOARCH); err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	dir := libraryDir()
	path := filepath.Join(dir, "libmirrord_layer-"+hex.EncodeToString(sum[:8])+".so")
	if old, err := os.ReadFile(path); err == nil && sha256.Sum256(old) == sum {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("preload library: %w", err)
	}
	// Write to a temporary name and rename: concurrent mirrord runs never
	// see (or load) a half-written library.
	tmp, err := os.CreateTemp(dir, ".layer-*")
	if err != nil {
		return "", fmt.Errorf("preload library: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return "", fmt.Errorf("preload library: %w", err)
	}
	tmp.Chmod(0o755)
	tmp.Close()
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return "", fmt.Errorf("preload library: %w", err)
	}
	return path, nil
}

// machines are the ELF machine of each architecture mirrord builds the
// library for.
var machines = map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}

// checkArch says whether data is a shared library for goarch: a build
// that embedded another architecture's library (a cross build without
// its own preload) would have every program fail to start with a loader
// error naming none of this.
func checkArch(data []byte, goarch string) error {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("the embedded preload library is damaged (%w); rebuild mirrord with `make build`", err)
	}
	if want, ok := machines[goarch]; !ok || f.Machine != want || f.Type != elf.ET_DYN {
		return fmt.Errorf("the embedded preload library is a %v %v file, not a shared library for this mirrord's %s; rebuild mirrord with `GOARCH=%s make build`",
			f.Machine, f.Type, goarch, goarch)
	}
	return nil
}

// systemDir is where root keeps the library: a program started as root
// may drop its privileges (a web server's workers, a database), and its
// new user must still be able to load the library, which root's own cache
// (/root/.cache, mode 0700) would not let it.
const systemDir = "/var/cache/mirrord"

// libraryDir is the directory for the library: systemDir for root (if it
// is root's and nobody else may write to it, since every preloaded
// program loads what is there), the user's cache directory otherwise.
func libraryDir() string {
	if os.Geteuid() == 0 {
		if err := os.MkdirAll(systemDir, 0o755); err == nil {
			var st syscall.Stat_t
			if syscall.Lstat(systemDir, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFDIR && st.Uid == 0 && st.Mode&0o022 == 0 {
				return systemDir
			}
		}
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "mirrord")
}
