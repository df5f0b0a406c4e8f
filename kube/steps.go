package kube

import (
	"log/slog"
	"time"
)

// Steps logs the steps of starting a session at debug level, each with
// its own duration (took, since the step before) and the time since the
// first (total).
type Steps struct {
	log         *slog.Logger
	first, last time.Time
}

// NewSteps starts timing now; a nil log discards.
func NewSteps(log *slog.Logger) *Steps {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := time.Now()
	return &Steps{log: log, first: now, last: now}
}

// Done logs msg as a finished step, with attrs as slog key-value pairs.
func (s *Steps) Done(msg string, attrs ...any) {
	now := time.Now()
	s.log.Debug(msg, append(attrs, "took", now.Sub(s.last).Round(time.Microsecond), "total", now.Sub(s.first).Round(time.Microsecond))...)
	s.last = now
}

// Logger is the logger the steps go to.
func (s *Steps) Logger() *slog.Logger { return s.log }
