package cli

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

type helpErr struct{ error }

func (helpErr) Help() string { return "check the \"target\" key" }

func (e helpErr) Unwrap() error { return e.error }

// The exact bytes of miette's JSONReportHandler (miette@v7.6.0
// src/handlers/json.rs:74-151): `": "` after keys, no space after commas,
// help only when there is one.
func TestWriteErrorJSON(t *testing.T) {
	inner := errors.New("pod \"x\" not found")
	err := helpErr{fmt.Errorf("resolve target:\n%w", inner)}
	var b bytes.Buffer
	writeErrorJSON(&b, err)
	want := `Error: {"message": "resolve target:\npod \"x\" not found","severity": "error","causes": ["resolve target:\npod \"x\" not found","pod \"x\" not found"],"help": "check the \"target\" key","labels": [],"related": []}` + "\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	writeErrorJSON(&b, errors.New("plain\ttab"))
	want = `Error: {"message": "plain\ttab","severity": "error","causes": [],"labels": [],"related": []}` + "\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}
