// Package progress reports what mirrord does while it sets a session up,
// in the forms MIRRORD_PROGRESS_MODE selects: lines for a person on a
// terminal, or the JSON stream upstream's IDE plugins parse.
package progress
