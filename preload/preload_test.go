package preload

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestLibrary checks the library this test binary embeds (make builds
// it before the tests, for the architecture they are built for; under
// qemu-user for arm64 in `make unit-arm64`): it is the file make built
// for runtime.GOARCH, a shared library for that machine, and Library
// installs exactly it.
func TestLibrary(t *testing.T) {
	built, err := os.ReadFile(libName)
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("%s is not built (make preload-lib builds it)", libName)
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := machines[runtime.GOARCH]; !ok {
		t.Fatalf("%s exists, but mirrord builds no library for %s", libName, runtime.GOARCH)
	}
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	t.Setenv("HOME", t.TempDir())
	// root's copy goes to systemDir, which real sessions share: a file
	// this test adds there (another architecture's) goes when it ends.
	before, _ := filepath.Glob(filepath.Join(systemDir, "*.so"))
	path, err := Library()
	if err == nil && filepath.Dir(path) == systemDir && !slices.Contains(before, path) {
		t.Cleanup(func() { os.Remove(path) })
	}
	if err != nil {
		t.Fatalf("Library: %v", err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, built) {
		t.Errorf("%s differs from %s: the binary embeds another file", path, libName)
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Machine != machines[runtime.GOARCH] || f.Type != elf.ET_DYN {
		t.Errorf("%s: %v %v, want a shared library for %s", path, f.Machine, f.Type, runtime.GOARCH)
	}
}

// fakeELF is the header of an ELF64 little-endian file.
func fakeELF(m elf.Machine, typ elf.Type) []byte {
	hdr := elf.Header64{Type: uint16(typ), Machine: uint16(m), Version: 1, Ehsize: 64}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, hdr)
	return b.Bytes()
}

func TestCheckArch(t *testing.T) {
	for _, tc := range []struct {
		data   []byte
		goarch string
		err    string // "" for no error
	}{
		{fakeELF(elf.EM_X86_64, elf.ET_DYN), "amd64", ""},
		{fakeELF(elf.EM_AARCH64, elf.ET_DYN), "arm64", ""},
		{fakeELF(elf.EM_X86_64, elf.ET_DYN), "arm64", "EM_X86_64 ET_DYN file, not a shared library for this mirrord's arm64; rebuild mirrord with `GOARCH=arm64 make build`"},
		{fakeELF(elf.EM_AARCH64, elf.ET_DYN), "amd64", "EM_AARCH64"},
		{fakeELF(elf.EM_AARCH64, elf.ET_EXEC), "arm64", "ET_EXEC"},
		{fakeELF(elf.EM_RISCV, elf.ET_DYN), "riscv64", "not a shared library for this mirrord's riscv64"},
		{[]byte("not an ELF file"), "amd64", "damaged"},
	} {
		err := checkArch(tc.data, tc.goarch)
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("checkArch(%s for %s): %v, want %q", tc.data[:min(len(tc.data), 20)], tc.goarch, err, tc.err)
		}
	}
}
