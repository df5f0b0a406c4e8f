// Package httpfilter decides which HTTP requests a filtered steal takes
// (feature.network.incoming.http_filter). Filters are regular expressions
// over "Name: value" header lines or over the request path, an exact method,
// and all_of/any_of combinations of those.
//
// Users write these regexes for upstream mirrord, whose engine supports
// look-around (for example "^(?!/health).*" to steal everything except
// health checks); Go's regexp cannot express that, so patterns are compiled
// with github.com/dlclark/regexp2, and matched case-insensitively as
// upstream does.
package httpfilter
