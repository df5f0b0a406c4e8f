// Package config is mirrord's configuration: the typed schema with the
// defaults of the upstream documentation, loading from JSON, TOML or YAML
// after rendering the file as a Tera template (template.go: gonja, a Jinja2
// engine, given Tera's functions, filters, tests and printing),
// MIRRORD_* environment overrides, validation with key-path errors, and a
// JSON Schema of the whole thing.
//
// Precedence, lowest first: defaults, config file, MIRRORD_* environment
// variables, command-line flags (applied by the caller through Overrides).
package config
