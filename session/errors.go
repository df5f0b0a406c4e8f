package session

import (
	"errors"
	"fmt"
)

// ExitError asks the command line to exit with Code after printing Err
// (if any): a program's exit status passes through mirrord this way.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// NotBuilt reports a feature that does not exist yet: exit status 2, so
// that scripts can tell it from a failure of a feature that does.
func NotBuilt(msg string) error { return &ExitError{Code: 2, Err: errors.New(msg)} }
