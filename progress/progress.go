package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"golang.org/x/term"
)

// Modes of MIRRORD_PROGRESS_MODE.
const (
	Std    = "std"    // human lines with timings
	Simple = "simple" // the same without timings
	JSON   = "json"   // one object per line, for the IDE plugins
	Off    = "off"
)

// Reporter reports what a command does while it sets a session up. A nil
// Reporter reports nothing.
type Reporter struct {
	mode string
	w    io.Writer
	ide  bool // MIRRORD_PROGRESS_SUPPORT_IDE: IdeMessage objects are read

	mu   sync.Mutex
	last time.Time
	root string // the task steps belong to (JSON: their parent)
}

// New reports in mode to w.
func New(mode string, w io.Writer) *Reporter {
	return &Reporter{mode: mode, w: w, last: time.Now()}
}

// FromEnv reads MIRRORD_PROGRESS_MODE (and MIRRORD_PROGRESS_SUPPORT_IDE).
// The default is std when stderr is a terminal and off otherwise, so that
// the output of `go test -exec mirrord` and pipelines stays the
// program's own. JSON goes to stdout, where the IDE plugins read it; the
// human forms go to stderr.
func FromEnv(lookup func(string) (string, bool), stdout, stderr io.Writer) *Reporter {
	mode, _ := lookup("MIRRORD_PROGRESS_MODE")
	if mode == "" {
		mode = Off
		if f, isFile := stderr.(*os.File); isFile {
			if term.IsTerminal(int(f.Fd())) {
				mode = Std
			}
		}
	}
	w := stderr
	if mode == JSON {
		w = stdout
	}
	r := New(mode, w)
	if v, _ := lookup("MIRRORD_PROGRESS_SUPPORT_IDE"); v == "true" || v == "1" {
		r.ide = true
	}
	return r
}

// Mode is the reporter's mode.
func (r *Reporter) Mode() string {
	if r == nil {
		return Off
	}
	return r.mode
}

// Step reports that a step of the set-up finished. In JSON it is a task
// of its own under the root task (see Begin), started and finished.
func (r *Reporter) Step(name, detail string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	took := now.Sub(r.last)
	r.last = now
	switch r.mode {
	case Std:
		fmt.Fprintf(r.w, "* %s: %s (%s)\n", name, detail, took.Round(time.Millisecond))
	case Simple:
		fmt.Fprintf(r.w, "* %s: %s\n", name, detail)
	case JSON:
		r.emit(newTask{Type: "NewTask", Name: name, Parent: r.parent()})
		r.emit(finishedTask{Type: "FinishedTask", Name: name, Success: true, Message: &detail})
	}
}

// Begin starts the root task that later steps belong to.
func (r *Reporter) Begin(name string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.root = name
	if r.mode == JSON {
		r.emit(newTask{Type: "NewTask", Name: name})
	}
}

// Finish ends the root task; message is what the plugins read from its
// FinishedTask (ext: the execution's JSON).
func (r *Reporter) Finish(success bool, message string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.mode {
	case JSON:
		r.emit(finishedTask{Type: "FinishedTask", Name: r.root, Success: success, Message: &message})
	case Std, Simple:
		if !success {
			fmt.Fprintf(r.w, "* %s: failed\n", r.root)
		}
	}
	r.root = ""
}

// Warning reports something the user should know and may act on.
func (r *Reporter) Warning(msg string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.mode {
	case JSON:
		r.emit(textMessage{Type: "Warning", Message: msg})
	default:
		// Warnings are shown whatever the mode: they are not progress.
		fmt.Fprintf(r.w, "mirrord: warning: %s\n", msg)
	}
}

// Info reports a fact about the session.
func (r *Reporter) Info(msg string) {
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch r.mode {
	case JSON:
		r.emit(textMessage{Type: "Info", Message: msg})
	case Std, Simple:
		fmt.Fprintf(r.w, "* %s\n", msg)
	}
}

// The JSON stream's objects, as upstream's mirrord-progress writes them
// and its IDE plugins read them: one per line, tagged by "type".
type (
	newTask struct {
		Type   string  `json:"type"`
		Name   string  `json:"name"`
		Parent *string `json:"parent"`
	}
	finishedTask struct {
		Type    string  `json:"type"`
		Name    string  `json:"name"`
		Success bool    `json:"success"`
		Message *string `json:"message"`
	}
	textMessage struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}
)

func (r *Reporter) parent() *string {
	if r.root == "" {
		return nil
	}
	root := r.root
	return &root
}

func (r *Reporter) emit(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	r.w.Write(append(b, '\n'))
}
