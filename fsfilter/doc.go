// Package fsfilter decides, for each path the local process opens, whether
// the file is read from the target, written on the target, kept local, or
// reported as not found (feature.fs). Both local engines (the preload and
// goshim) ask the internal proxy, which asks this package, so that they
// behave the same.
package fsfilter
