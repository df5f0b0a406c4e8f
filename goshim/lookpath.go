package goshim

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// lookPath finds file like execvp(3) would for the program: in the PATH of
// the program's environment (mirrord's PATH may differ from it), falling
// back to the helper's PATH if env has none. Names containing a slash are
// used as they are, relative to the working directory.
func lookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		if err := checkExecutable(file); err != nil {
			return "", &exec.Error{Name: file, Err: err}
		}
		return file, nil
	}
	pathVar, ok := lookupEnv(env, "PATH")
	if !ok {
		pathVar = os.Getenv("PATH")
	}
	var denied error
	for _, dir := range filepath.SplitList(pathVar) {
		if dir == "" {
			dir = "." // an empty PATH entry means the working directory
		}
		path := dir + "/" + file
		err := checkExecutable(path)
		if err == nil {
			return path, nil
		}
		// Like execvp: a match we may not execute is reported only if no
		// later entry has a usable one.
		if denied == nil && errors.Is(err, syscall.EACCES) {
			denied = err
		}
	}
	if denied != nil {
		return "", &exec.Error{Name: file, Err: denied}
	}
	return "", &exec.Error{Name: file, Err: exec.ErrNotFound}
}

func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() {
		return syscall.EACCES
	}
	return unix.Access(path, unix.X_OK)
}

// lookupEnv returns the first value of key in env: with duplicates, that
// is the one getenv(3) and Go's os.Getenv return in the program.
func lookupEnv(env []string, key string) (string, bool) {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// LookPath finds file as the program's execvp(3) would, in the PATH of env
// (falling back to mirrord's PATH): the other engines use it too, so that
// every engine runs the same file.
func LookPath(file string, env []string) (string, error) { return lookPath(file, env) }
