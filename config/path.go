package config

import (
	"fmt"
	"sort"
	"strings"
)

// Path is the dotted location of a value inside a config document, written
// the way users read it: "feature.network.outgoing.filter.remote[1]".
type Path string

// Key returns the path of the child key k.
func (p Path) Key(k string) Path {
	if p == "" {
		return Path(k)
	}
	return Path(string(p) + "." + k)
}

// Index returns the path of the i-th element of the list at p.
func (p Path) Index(i int) Path { return Path(fmt.Sprintf("%s[%d]", p, i)) }

func (p Path) String() string {
	if p == "" {
		return "(root)"
	}
	return string(p)
}

// FieldError is one problem found in a configuration, tied to the key that
// caused it.
type FieldError struct {
	Path Path
	Msg  string
}

func (e *FieldError) Error() string { return e.Path.String() + ": " + e.Msg }

// Errors is every problem found while loading a configuration. Loading does
// not stop at the first error so that a user can fix a file in one pass.
type Errors []*FieldError

func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

func (es *Errors) add(p Path, format string, args ...any) {
	*es = append(*es, &FieldError{Path: p, Msg: fmt.Sprintf(format, args...)})
}

// err returns es as an error, or nil when it is empty (a nil Errors in an
// error interface would not compare equal to nil).
func (es Errors) err() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// suggest returns the candidate closest to s by edit distance, or "" when
// none is close enough to be a plausible typo.
func suggest(s string, candidates []string) string {
	best, bestD := "", len(s)/3+2
	for _, c := range candidates {
		if d := levenshtein(strings.ToLower(s), strings.ToLower(c)); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
