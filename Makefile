# mirrord in Go. `make test` and `make demo` are the two entry points the
# README documents; both install what they need.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo 0.1.0-dev)
LDFLAGS := -s -w -X github.com/mirrord-go/mirrord/version.Version=$(VERSION)
BIN := bin/mirrord
# Static binary: the same file runs locally and as the in-cluster agent.
export CGO_ENABLED := 0

.PHONY: all build deps test unit lint demo e2e bench clean

all: build

build:
	go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/mirrord

## unit: unit tests and the hermetic integration tests (network
## namespaces; they need root), with a closing summary line.
unit:
	@scripts/gotest.sh ./...

## lint: formatting, go vet and staticcheck (pinned in go.mod as a tool).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	go tool staticcheck ./...

## deps: system tools the tests use (iproute2, curl, python3, ...).
deps:
	@scripts/deps.sh

## test: everything CI checks.
test: deps lint build unit

demo:
	@echo "make demo: not built yet — it needs the agent (issue 4), the Kubernetes transport (issue 8) and the kind harness (issue 7)." >&2
	@exit 2

e2e:
	@echo "make e2e: not built yet — the kind harness is issue 7." >&2
	@exit 2

## bench: throughput side by side (needs root); writes bench/results.md.
bench: deps
	go test -tags bench -run TestBench -count=1 -v -timeout 20m ./integration

clean:
	rm -rf bin
