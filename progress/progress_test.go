package progress

import (
	"bytes"
	"testing"
)

// The lines upstream's JsonProgress prints (mirrord/progress/src/
// implementations.rs:277-366 at mirrord@8320eb8): compact, one per line,
// "type" first, "parent" and "message" always present.
func TestJSONLines(t *testing.T) {
	var b bytes.Buffer
	r := New(JSON, &b)
	r.Begin("mirrord preparing to launch")
	r.Step("agent", "default/mirrord-agent-x")
	r.Warning("w")
	r.Info("i")
	r.Finish(true, `{"environment":{}}`)
	want := `{"type":"NewTask","name":"mirrord preparing to launch","parent":null}
{"type":"NewTask","name":"agent","parent":"mirrord preparing to launch"}
{"type":"FinishedTask","name":"agent","success":true,"message":"default/mirrord-agent-x"}
{"type":"Warning","message":"w"}
{"type":"Info","message":"i"}
{"type":"FinishedTask","name":"mirrord preparing to launch","success":true,"message":"{\"environment\":{}}"}
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestOffIsQuiet(t *testing.T) {
	var b bytes.Buffer
	r := New(Off, &b)
	r.Begin("x")
	r.Step("a", "b")
	r.Info("i")
	r.Finish(true, "m")
	if b.Len() != 0 {
		t.Errorf("off printed %q", b.String())
	}
	var nilR *Reporter
	nilR.Step("a", "b") // a nil Reporter reports nothing
}
