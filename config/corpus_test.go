package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// noEnv is an empty environment, so that the machine's MIRRORD_* variables
// cannot change test results.
func noEnv(string) (string, bool) { return "", false }

// TestSpecExamples loads every complete config example of the upstream
// documentation (testdata/spec, copied verbatim with their line numbers).
func TestSpecExamples(t *testing.T) {
	files, err := filepath.Glob("testdata/spec/*")
	if err != nil || len(files) < 40 {
		t.Fatalf("expected the spec corpus in testdata/spec, found %d files (%v)", len(files), err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			if _, err := Load(Options{File: file, Lookup: noEnv}); err != nil {
				t.Fatalf("spec example does not load:\n%v", err)
			}
		})
	}
}

// TestInvalidConfigs checks that each file of testdata/invalid fails, and
// that the error names the key path given on its first line ("// want:" or
// "# want:"), and contains the text of an optional "msg:" line.
func TestInvalidConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/invalid/*")
	if err != nil || len(files) < 40 {
		t.Fatalf("expected at least 40 invalid configs in testdata/invalid, found %d (%v)", len(files), err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			want, msg := corpusExpectations(t, file)
			_, err := Load(Options{File: file, Lookup: noEnv})
			if err == nil {
				t.Fatalf("loaded without error; want an error at %s", want)
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error is not a key-path error: %v", err)
			}
			found := false
			for _, e := range es {
				if e.Path.String() == want || strings.HasPrefix(e.Path.String(), want+"[") || strings.HasPrefix(e.Path.String(), want+".") {
					found = true
				}
			}
			if !found {
				t.Errorf("no error at key %s; got:\n%v", want, err)
			}
			if msg != "" && !strings.Contains(err.Error(), msg) {
				t.Errorf("error does not mention %q:\n%v", msg, err)
			}
		})
	}
}

func corpusExpectations(t *testing.T, file string) (want, msg string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		line = strings.TrimPrefix(strings.TrimPrefix(line, "//"), "#")
		line = strings.TrimSpace(line)
		if v, ok := strings.CutPrefix(line, "want:"); ok {
			want = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "msg:"); ok {
			msg = strings.TrimSpace(v)
		}
	}
	if want == "" {
		t.Fatalf("%s has no want: line", file)
	}
	return want, msg
}
