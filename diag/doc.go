// Package diag records a mirrord process's runtime statistics (goroutines,
// heap, resident memory, open files) as JSON lines in a file, at an
// interval: what a soak test watches for leaks, and what a user can send
// with a report. It is off unless MIRRORD_STATS_FILE names a file.
package diag
