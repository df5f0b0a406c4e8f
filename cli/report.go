package cli

import (
	"errors"
	"fmt"
	"io"
	"strings"
)

// The commands the IDE plugins run (ls, ext) report a fatal error on
// stderr as upstream's CLI does there: one line, "Error: " and a JSON
// object with the keys, order and spacing of miette's JSONReportHandler,
// which is what the plugins parse (VS Code reads message and help;
// IntelliJ also needs severity, causes, labels and related, typed as
// lists of strings, so labels and related stay empty).

// helper is an error that carries advice for the user.
type helper interface{ Help() string }

// writeErrorJSON writes err as the plugins read it.
func writeErrorJSON(w io.Writer, err error) {
	var b strings.Builder
	b.WriteString(`{"message": `)
	b.WriteString(jsonString(err.Error()))
	b.WriteString(`,"severity": "error","causes": [`)
	// causes: the wrapped errors below the top one, as miette lists an
	// error's source chain.
	first := true
	for cause := errors.Unwrap(err); cause != nil; cause = errors.Unwrap(cause) {
		if !first {
			b.WriteString(",")
		}
		first = false
		b.WriteString(jsonString(cause.Error()))
	}
	b.WriteString("]")
	var h helper
	if errors.As(err, &h) && h.Help() != "" {
		b.WriteString(`,"help": `)
		b.WriteString(jsonString(h.Help()))
	}
	b.WriteString(`,"labels": [],"related": []}`)
	fmt.Fprintf(w, "Error: %s\n", b.String())
}

// jsonString quotes s as JSON (encoding/json would also escape <, > and
// &, which is valid JSON too; this keeps messages readable in raw form).
func jsonString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if r < 0x20 {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}
