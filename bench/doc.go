// Package bench keeps bench/results.md, the file `make bench` writes: each
// benchmark owns one "## " section of it and replaces only that section,
// so that benchmarks of different components (the engines, the agent, the
// Kubernetes transport) share one report measured side by side.
package bench
