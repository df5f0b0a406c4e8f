package session

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"os"
	"path/filepath"
	"strings"

	"github.com/mirrord-go/mirrord/config"
)

// chooseEngine decides how mirrord reaches into the program at path:
// dynamically linked programs get the preload library; Go programs (cgo or
// not) and static ones make system calls without libc, so they run in the
// netstack sandbox. A script is judged by its interpreter. Anything mirrord
// cannot read gets the preload, which is harmless where it does not apply.
func chooseEngine(want config.Engine, path string) config.Engine {
	if want == config.EnginePreload || want == config.EngineNetstack {
		return want
	}
	for range 4 { // #! chains are short; a loop must not hang mirrord
		f, err := elf.Open(path)
		if err != nil {
			interp := shebang(path)
			if interp == "" {
				return config.EnginePreload
			}
			path = interp
			continue
		}
		static := true
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				static = false
			}
		}
		f.Close()
		if static {
			return config.EngineNetstack
		}
		if _, err := buildinfo.ReadFile(path); err == nil {
			return config.EngineNetstack
		}
		return config.EnginePreload
	}
	return config.EnginePreload
}

// shebang returns the interpreter a script names on its #! line.
func shebang(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	line, _ := bufio.NewReader(f).ReadSlice('\n')
	rest, ok := bytes.CutPrefix(line, []byte("#!"))
	if !ok {
		return ""
	}
	fields := strings.Fields(string(rest))
	if len(fields) == 0 || !filepath.IsAbs(fields[0]) {
		return ""
	}
	return fields[0]
}

// buildTools are the programs skip_build_tools keeps mirrord out of (the
// Go toolchain's own tools included, so that `go run` and `go test` build
// locally and only the built program runs in the target's context).
var buildTools = []string{
	"as", "cc", "ld", "go", "air", "asm", "cc1", "cc1plus", "cgo", "dlv", "gcc", "g++", "git", "link",
	"cargo", "rustc", "compile", "collect2", "cargo-watch", "vet", "buildid", "cover", "make",
}

// skipper reports whether an executable is one skipList names (by base
// name); nil when the list is empty.
func skipper(cfg *config.Config) func(exe string) bool { return skipNames(skipList(cfg)) }

// skipNames matches executables whose base name is in the ';'-separated
// list (nil for an empty list).
func skipNames(list string) func(exe string) bool {
	if list == "" {
		return nil
	}
	names := map[string]bool{}
	for _, n := range strings.Split(list, ";") {
		names[n] = true
	}
	return func(exe string) bool { return names[filepath.Base(exe)] }
}

// skipList is the ';'-separated list of executable names the preload
// stays out of: skip_processes, plus the build tools.
func skipList(cfg *config.Config) string {
	names := append([]string(nil), cfg.SkipProcesses...)
	if cfg.SkipBuildTools {
		names = append(names, buildTools...)
		names = append(names, cfg.SkipExtraBuildTools...)
	}
	return strings.Join(names, ";")
}
